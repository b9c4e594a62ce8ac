// eslint with oclif's shared config (flat config), as oclif's own projects lint, plus what tbmesh holds itself to: no
// import cycles, type-only imports included. Rules that only re-style code that tbmesh writes another, consistent way
// are off (key and member sorting, where object keys are in a file format's documented order; blank lines, wrapping
// and quote style, which prettier-like tools would settle; a line length the docstrings are wrapped to instead); every
// rule that finds a bug stays on.
import oclif from 'eslint-config-oclif'

export default [
  {ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'test/fixtures/**']},
  ...oclif,
  {
    rules: {
      'import/no-cycle': ['error', {ignoreExternal: true}],
      // Node's modules, then packages, then tbmesh's own, a blank line between
      'perfectionist/sort-imports': [
        'error',
        {
          type: 'natural',
          newlinesBetween: 'always',
          groups: [
            ['builtin', 'builtin-type'],
            ['external', 'external-type'],
            ['internal', 'internal-type', 'parent', 'parent-type', 'sibling', 'sibling-type', 'index', 'index-type'],
            'unknown',
          ],
        },
      ],
      // style tbmesh writes its own consistent way
      'perfectionist/sort-objects': 'off',
      'perfectionist/sort-interfaces': 'off',
      'perfectionist/sort-object-types': 'off',
      'perfectionist/sort-union-types': 'off',
      'perfectionist/sort-intersection-types': 'off',
      'perfectionist/sort-classes': 'off',
      'perfectionist/sort-switch-case': 'off',
      'perfectionist/sort-sets': 'off',
      'perfectionist/sort-array-includes': 'off',
      'perfectionist/sort-named-exports': 'off',
      'perfectionist/sort-exports': 'off',
      '@stylistic/object-curly-newline': 'off',
      '@stylistic/arrow-parens': 'off',
      '@stylistic/padding-line-between-statements': 'off',
      '@stylistic/indent': 'off',
      '@stylistic/indent-binary-ops': 'off',
      '@stylistic/max-len': 'off',
      '@stylistic/lines-between-class-members': 'off',
      '@stylistic/function-paren-newline': 'off',
      '@stylistic/function-call-argument-newline': 'off',
      '@stylistic/operator-linebreak': 'off',
      '@stylistic/array-element-newline': 'off',
      '@stylistic/no-mixed-operators': 'off',
      '@stylistic/brace-style': 'off',
      'unicorn/number-literal-case': 'off',
      'unicorn/numeric-separators-style': 'off',
      'unicorn/no-nested-ternary': 'off',
      'unicorn/switch-case-braces': 'off',
      'unicorn/catch-error-name': 'off',
      'unicorn/prefer-string-raw': 'off',
      'unicorn/escape-case': 'off',
      'unicorn/no-negated-condition': 'off',
      'unicorn/prefer-ternary': 'off',
      'unicorn/no-array-reduce': 'off',
      'unicorn/no-array-for-each': 'off',
      'unicorn/no-useless-undefined': 'off',
      // misfires on streams' own concat() (node-tar's Pack)
      'unicorn/prefer-spread': 'off',
      'object-shorthand': 'off',
      'prefer-destructuring': 'off',
      'capitalized-comments': 'off',
      // binary formats (protobuf varints, IPv4 masks, DER) are bit arithmetic
      'no-bitwise': 'off',
      // ordered work: transactions, durable writes one after another, retries
      'no-await-in-loop': 'off',
      // the command line's own conventions
      complexity: 'off',
      'max-params': 'off',
      // Node's built-in modules are imported whole (`fs.writeFileSync`), as Node documents them
      'import/no-named-as-default-member': 'off',
      // the file formats' own keys: Nebula's `ca_sha`, `am_lighthouse`; Compose's `host_ip`
      camelcase: 'off',
      // control characters are matched on purpose: they are what tbmesh refuses or escapes
      'no-control-regex': 'off',
      'no-void': ['error', {allowAsStatement: true}],
      // `_`-named bindings are deliberately unused (a destructured field left out of the rest)
      '@typescript-eslint/no-unused-vars': ['error', {argsIgnorePattern: '^_', varsIgnorePattern: '^_', ignoreRestSiblings: true}],
      'unicorn/consistent-function-scoping': 'off',
      // vitest, not mocha
      'mocha/no-top-level-hooks': 'off',
      'mocha/max-top-level-suites': 'off',
      'mocha/no-sibling-hooks': 'off',
      'mocha/consistent-spacing-between-blocks': 'off',
      'mocha/handle-done-callback': 'off',
    },
  },
  {
    // One way to start a child process, so that none gets tbmesh's secrets in its environment: src/lib/spawn.ts.
    files: ['src/**/*.ts'],
    ignores: ['src/lib/spawn.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            // oclif's own list (deprecated Node modules), kept
            ...['domain', 'freelist', 'smalloc', 'punycode', 'sys', 'querystring', 'colors'],
            {name: 'execa', message: 'start child processes with runChild/runShell (src/lib/spawn.ts): they strip tbmesh\'s secrets from the environment'},
            {name: 'node:child_process', message: 'start child processes with runChild/runShell (src/lib/spawn.ts)'},
            {name: 'child_process', message: 'start child processes with runChild/runShell (src/lib/spawn.ts)'},
          ],
        },
      ],
      'no-restricted-syntax': [
        'error',
        {selector: "ImportExpression[source.value=/^(execa|(node:)?child_process)$/]", message: 'start child processes with runChild/runShell (src/lib/spawn.ts)'},
      ],
    },
  },
  {
    // Tests: parsed documents are loosely typed, templates hold Compose's literal `${VAR}`, and they run on the Node
    // this repository is tested with (20.20), not every Node the package allows.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      'no-template-curly-in-string': 'off',
      'n/no-unsupported-features/node-builtins': 'off',
      'no-sequences': 'off',
      'no-return-assign': 'off',
    },
  },
]
