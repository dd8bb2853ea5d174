/**
 * The commands `cardlink demo` prints once the card is in the reader: list the card's objects, sign
 * with the PIV Authentication key (9A) through OpenSC's PKCS#11 module, verify the signature with
 * openssl, and show the public keys as ssh sees them. test/integration/demo.test.ts runs each one.
 */
import fs from 'node:fs';
import path from 'node:path';

/** Where Debian-like systems install OpenSC's PKCS#11 module, per architecture. */
const OPENSC_MODULE_CANDIDATES = [
  '/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so',
  '/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so',
  '/usr/lib/arm-linux-gnueabihf/opensc-pkcs11.so',
  '/usr/lib/i386-linux-gnu/opensc-pkcs11.so',
  '/usr/lib64/opensc-pkcs11.so',
  '/usr/lib/opensc-pkcs11.so',
  '/usr/local/lib/opensc-pkcs11.so',
];

/** OpenSC's PKCS#11 module on this machine (the first candidate when none is installed). */
export function openscModule(): { path: string; installed: boolean } {
  const found = OPENSC_MODULE_CANDIDATES.find((p) => fs.existsSync(p));
  return { path: found ?? OPENSC_MODULE_CANDIDATES[0]!, installed: found !== undefined };
}

/** Quotes `word` for a POSIX shell when it needs it. */
export function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

export interface TryCommand {
  /** The command line, ready to paste into a shell. */
  readonly line: string;
  /** What it shows, printed under it. */
  readonly note: string;
  /** It asks for the card's PIN on the terminal. */
  readonly asksForPin: boolean;
}

export interface TryCommandOptions {
  /** The PC/SC reader (slot) the card is in, e.g. "cardlink Virtual Reader 00 00". */
  readerName: string;
  /** Directory of message.txt and of what the commands write. */
  tryDir: string;
  /** bin/cardlink. */
  cardlinkBin: string;
  daemonConfigFile: string;
  module?: string;
}

/** The file the sign command signs; written by the demo. */
export const TRY_MESSAGE = 'message.txt';

export function tryCommands(options: TryCommandOptions): TryCommand[] {
  const module = shellQuote(options.module ?? openscModule().path);
  const slot = shellQuote(options.readerName);
  const file = (name: string) => shellQuote(path.join(options.tryDir, name));
  const p11 = `pkcs11-tool --module ${module} --slot-description ${slot}`;
  return [
    {
      line: `${p11} --list-objects`,
      note: "the card's keys and certificates (ID 01 = slot 9A, 02 = 9C, 03 = 9D, 04 = 9E)",
      asksForPin: false,
    },
    {
      line: `${p11} --login --sign --id 01 --mechanism SHA256-RSA-PKCS --input-file ${file(TRY_MESSAGE)} --output-file ${file('message.sig')}`,
      note: 'signs message.txt with the 9A key on the card server; asks for the PIN',
      asksForPin: true,
    },
    {
      line: `${p11} --read-object --type pubkey --id 01 --output-file ${file('9a-public.der')}`,
      note: 'the 9A public key (DER)',
      asksForPin: false,
    },
    {
      line: `openssl dgst -sha256 -keyform DER -verify ${file('9a-public.der')} -signature ${file('message.sig')} ${file(TRY_MESSAGE)}`,
      note: 'checks the signature: "Verified OK"',
      asksForPin: false,
    },
    {
      line: `ssh-keygen -D ${module}`,
      note: 'the public keys in ssh form (for authorized_keys)',
      asksForPin: false,
    },
    {
      line: `${shellQuote(options.cardlinkBin)} status --config ${shellQuote(options.daemonConfigFile)}`,
      note: "the demo daemon's session and cards",
      asksForPin: false,
    },
  ];
}

/** Writes the file the sign command signs (every run; a user may have changed it, that is fine). */
export function writeTryMessage(tryDir: string): void {
  const file = path.join(tryDir, TRY_MESSAGE);
  if (!fs.existsSync(file)) fs.writeFileSync(file, 'Signed by a cardlink card.\n', { mode: 0o644 });
}
