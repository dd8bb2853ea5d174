/** Puts a new private file into place atomically, never over one that is already there. */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';

/**
 * Writes `content` to a fresh temporary file beside `file` (O_EXCL, 0600), fsyncs it and links it
 * to `file`, so a reader never sees half of it. Returns false when `file` already existed (another
 * start got there first: its file stands). The temporary file is removed either way.
 */
export function linkNewPrivateFile(file: string, content: string): boolean {
  // A random name: a crashed earlier start may have left its temp file behind.
  const temp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    const fd = fs.openSync(temp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    try {
      fs.writeSync(fd, content);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.linkSync(temp, file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    fs.rmSync(temp, { force: true });
  }
}
