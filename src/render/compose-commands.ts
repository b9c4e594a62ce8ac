/**
 * The exact `docker compose` command lines of a node, the same in the compose files' headers, the bundle's README and
 * tbmesh's README: the complete stack, and TruBudget's two operator layouts with tbmesh's overrides. Directories are
 * written as given (the placeholder `/etc/tbmesh` until `tbmesh install` puts the real one in).
 */

/** The two layouts of TruBudget's own compose files that tbmesh's overrides go over. */
export type OperatorLayout = 'operation' | 'services'

/** The override file (under `DIR/docker/`) for each layout, and for the per-service layout's documents. */
export const OVERRIDE_FILES = {
  operation: 'trubudget-operation.override.yml',
  services: 'trubudget-services.override.yml',
  documents: 'trubudget-services-documents.override.yml',
} as const

/** `docker compose … up -d` of the complete stack in `dir`. */
export function stackCommand(dir: string): string {
  return `docker compose --env-file ${dir}/trubudget/node.env -f ${dir}/docker/compose.yml up -d`
}

/** The services TruBudget's `scripts/operation` file runs for a node of each role (its "alpha" and "beta" services). */
export function operationServices(origin: boolean, documents: boolean): string[] {
  return [...(origin ? ['alpha-node', 'alpha-api', 'frontend'] : ['beta-node', 'beta-api', 'beta-frontend']), ...(documents ? ['storage-service', 'minio'] : [])]
}

/** TruBudget's blockchain file in its `docker-compose/` folder for a node of each role. */
export function servicesBlockchainFile(origin: boolean): string {
  return `blockchain/docker-compose.${origin ? 'alphanode' : 'betanode'}.yml`
}

/**
 * The command an operator runs in TruBudget's folder of `layout` (`scripts/operation/` or `docker-compose/`), with
 * tbmesh's override last and the env files after TruBudget's `.env` (given explicitly: once any `--env-file` is given,
 * compose reads no `.env` by itself).
 */
export function adoptionCommand(layout: OperatorLayout, dir: string, o: {origin: boolean; documents: boolean}): string {
  const env = `--env-file .env --env-file ${dir}/docker/trubudget.env --env-file ${dir}/trubudget/node.env`
  if (layout === 'operation') {
    return `docker compose -f docker-compose.yml -f ${dir}/docker/${OVERRIDE_FILES.operation} -p trubudget-operation ${env} up -d ${operationServices(o.origin, o.documents).join(' ')}`
  }
  const files = [
    servicesBlockchainFile(o.origin),
    ...(o.documents ? ['storage-service/docker-compose.yml'] : []),
    'blockchain/persistence.docker-compose.yml',
    'api/docker-compose.yml',
    'frontend/docker-compose.yml',
    `${dir}/docker/${OVERRIDE_FILES.services}`,
    ...(o.documents ? [`${dir}/docker/${OVERRIDE_FILES.documents}`] : []),
  ]
  return `docker compose --project-directory . ${files.map((f) => `-f ${f}`).join(' ')} ${env} up -d`
}
