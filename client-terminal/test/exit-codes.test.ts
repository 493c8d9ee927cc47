import { describe, expect, it } from 'vitest'
import { ClientError, ClientErrorCode } from '../../shared/client/errors.js'
import { ExitCode, exitCodeFor } from '../exit-codes.js'

function refused(code: ClientErrorCode, serverCode: string, status: number): ClientError {
  return new ClientError(code, `refused: ${serverCode}`, { serverCode, status })
}

describe('exitCodeFor', () => {
  it("tells the device refusals apart by the server's code", () => {
    expect(exitCodeFor(refused(ClientErrorCode.Server, 'E2E_ERR_DEVICE_NOT_FOUND', 404))).toBe(
      ExitCode.NoSuchDevice,
    )
    expect(exitCodeFor(refused(ClientErrorCode.Server, 'E2E_ERR_LAST_DEVICE', 409))).toBe(ExitCode.LastDevice)
    // The core reports a removed device as "not logged in"; the server's code says why.
    expect(exitCodeFor(refused(ClientErrorCode.NotLoggedIn, 'E2E_ERR_DEVICE_REMOVED', 401))).toBe(
      ExitCode.DeviceRemoved,
    )
    // Other refusals stay "refused".
    expect(exitCodeFor(refused(ClientErrorCode.NotLoggedIn, 'E2E_ERR_UNAUTHENTICATED', 401))).toBe(
      ExitCode.ServerRefused,
    )
    expect(exitCodeFor(refused(ClientErrorCode.Server, 'E2E_ERR_RATE_LIMITED', 429))).toBe(
      ExitCode.ServerRefused,
    )
  })

  it('maps a link that did not complete', () => {
    expect(exitCodeFor(new ClientError(ClientErrorCode.LinkFailed, 'did not open'))).toBe(ExitCode.LinkFailed)
    expect(exitCodeFor(new ClientError(ClientErrorCode.Cancelled, 'given up'))).toBe(ExitCode.LinkFailed)
    expect(exitCodeFor(refused(ClientErrorCode.Server, 'E2E_ERR_LINK_EXPIRED', 410))).toBe(
      ExitCode.LinkExpired,
    )
  })

  it('has one code per meaning', () => {
    const codes = Object.values(ExitCode)
    expect(new Set(codes).size).toBe(codes.length)
  })
})
