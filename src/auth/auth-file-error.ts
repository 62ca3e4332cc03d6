/**
 * A password or ACL file that cannot be read as Mosquitto reads it. The message names the file and the line
 * (`FILE:LINE: reason`) and never quotes a hash or a password, so it can go to a log as it is.
 */
export class AuthFileError extends Error {
  override readonly name = 'AuthFileError'
  readonly file: string
  /** 1-based; 0 when the problem is the file as a whole (it cannot be opened). */
  readonly line: number
  readonly reason: string

  constructor(file: string, line: number, reason: string, options?: ErrorOptions) {
    super(line > 0 ? `${file}:${line}: ${reason}` : `${file}: ${reason}`, options)
    this.file = file
    this.line = line
    this.reason = reason
  }
}
