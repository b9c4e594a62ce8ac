/**
 * Passphrase encryption of a whole bundle in the age format (age-encryption.org/v1, scrypt recipient), readable with
 * `age -d`, through the `age-encryption` package (loaded only when a bundle is encrypted or decrypted).
 */

import path from 'node:path'

import {UserError} from '../errors.js'
import {refusal} from './layout.js'

/** The first line of every file in the age format (age-encryption.org/v1). */
const AGE_HEADER = 'age-encryption.org/v1\n'

/** Whether `data` starts like a file in the age format. */
export function isAgeEncrypted(data: Buffer): boolean {
  return data.subarray(0, AGE_HEADER.length).toString('latin1') === AGE_HEADER
}

/**
 * `data` encrypted in the age format with `passphrase` (scrypt recipient, work factor log2 N, default 18 as the age
 * CLI uses). CPU-bound for about a second at the default: never call it while holding the home's lock.
 */
export async function encryptWithPassphrase(data: Buffer, passphrase: Buffer, workFactor = 18): Promise<Buffer> {
  const {Encrypter} = await import('age-encryption')
  const encrypter = new Encrypter()
  encrypter.setPassphrase(passphrase.toString('utf8'))
  encrypter.setScryptWorkFactor(workFactor)
  return Buffer.from(await encrypter.encrypt(data))
}

/**
 * The plaintext of age-encrypted `data` (the bytes of `file`) with `passphrase`.
 * @throws UserError for a wrong passphrase, or a refusal when `data` is not a valid age file
 */
export async function decryptWithPassphrase(file: string, data: Buffer, passphrase: Buffer): Promise<Buffer> {
  const {Decrypter} = await import('age-encryption')
  const decrypter = new Decrypter()
  decrypter.addPassphrase(passphrase.toString('utf8'))
  try {
    return Buffer.from(await decrypter.decrypt(data))
  } catch (error) {
    const message = (error as Error).message
    if (/incorrect passphrase|no identity matched|failed to decrypt file key/i.test(message)) {
      throw new UserError(`wrong passphrase for bundle ${path.basename(file)}`, {fix: 'check --bundle-passphrase-file / TBMESH_BUNDLE_PASSPHRASE'})
    }
    throw refusal(file, `it is not a valid age file (${message.replaceAll(/\s+/g, ' ')})`)
  }
}
