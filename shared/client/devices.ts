/**
 * The account's devices as a UI lists and manages them (docs/protocol.md §13.8): their ids, their
 * names (sealed by the account's devices, opened here), which one this is; renaming this device,
 * removing one. Over the account's session; the server reads none of the names.
 *
 * What it does not know: linking (link.ts), sessions with contacts' devices, the UI.
 */
import { fromBase64Url, toBase64Url } from '../bytes.js'
import { DevicesResponse } from '../codec/api.js'
import { decode } from '../codec/schema.js'
import { checkDeviceName, deviceNameKey, openDeviceName, sealDeviceName } from '../device-name.js'
import { ownDeviceId } from './account.js'
import type { AccountSession } from './account-session.js'
import { ClientError, ClientErrorCode } from './errors.js'
import type { SealedStore } from './sealed-store.js'

export interface DeviceView {
  readonly id: number
  /** Its name; undefined when it has none, or when it does not open (sealed by no device of ours). */
  readonly name: string | undefined
  /** When it was added (the account's first device: when the account was registered). */
  readonly createdAt: number
  /** When it last logged in. */
  readonly lastSeenAt: number
  /** The device this client runs on. */
  readonly current: boolean
}

export class Devices {
  private readonly session: AccountSession
  private readonly records: SealedStore

  constructor(session: AccountSession, records: SealedStore) {
    this.session = session
    this.records = records
  }

  private nameKey(): Uint8Array {
    return deviceNameKey(fromBase64Url(this.records.account.secrets.identity))
  }

  /** The account's devices, by id. */
  async list(): Promise<DeviceView[]> {
    const answer = decode(DevicesResponse, await this.session.api('GET', '/devices'), 'devices')
    const key = this.nameKey()
    const devices = await Promise.all(
      answer.devices.map(async (device): Promise<DeviceView> => {
        const name =
          device.name === undefined
            ? undefined
            : await openDeviceName(key, device.id, fromBase64Url(device.name)).catch(() => undefined)
        return {
          id: device.id,
          name,
          createdAt: device.createdAt,
          lastSeenAt: device.lastSeenAt,
          current: device.current,
        }
      }),
    )
    key.fill(0)
    return devices.sort((a, b) => a.id - b.id)
  }

  /** Names this device (undefined: no name); the name is checked first (InvalidInput). */
  async rename(name: string | undefined): Promise<void> {
    let sealed: string | undefined
    if (name !== undefined) {
      try {
        checkDeviceName(name)
      } catch (cause) {
        throw new ClientError(ClientErrorCode.InvalidInput, (cause as Error).message, { cause })
      }
      const key = this.nameKey()
      sealed = toBase64Url(await sealDeviceName(key, ownDeviceId(this.records.account.secrets), name))
      key.fill(0)
    }
    await this.session.api('PUT', '/devices/current/name', sealed === undefined ? {} : { name: sealed })
  }

  /**
   * Removes a device of the account: its sessions end at once, its queue and prekeys go. This
   * device too, if it is the one named: then its own session has ended (the caller stops).
   * The account's last device is refused (E2E_ERR_LAST_DEVICE: delete the account instead).
   */
  async remove(deviceId: number): Promise<void> {
    if (!Number.isInteger(deviceId) || deviceId < 1 || deviceId > 0xffff_ffff) {
      throw new ClientError(
        ClientErrorCode.InvalidInput,
        `device id: expected a positive integer, got ${deviceId}`,
      )
    }
    await this.session.api('DELETE', `/devices/${deviceId}`)
    if (deviceId === ownDeviceId(this.records.account.secrets)) await this.session.forgetToken()
  }
}
