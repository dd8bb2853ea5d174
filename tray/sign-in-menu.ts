/**
 * The sign-in part of the tray's menu, pure like tray-state.ts (which places these entries in its
 * fixed layout): one "Sign in with <name>…" entry per configured identity provider when there are
 * several (`login.issuers`, the admin's default first), "Sign in with a code…" for the device
 * authorization grant where no browser can open (RFC 8628), and, while such a sign-in waits, the
 * code and the address to enter it at.
 */
import type { DaemonStatus } from '../daemon/control/control-protocol.js';

/** Entries for the identity providers after the default (which the `sign` entry names). */
export const OTHER_ISSUER_KEYS = [
  'sign-in-2',
  'sign-in-3',
  'sign-in-4',
  'sign-in-5',
  'sign-in-6',
  'sign-in-7',
  'sign-in-8',
] as const;
export type OtherIssuerKey = (typeof OTHER_ISSUER_KEYS)[number];

/** The menu's sign-in actions: at the default IdP, at another, with a code. */
export type SignInAction = 'sign-in' | OtherIssuerKey | 'sign-in-code';

/** A device sign-in under way: what the user enters where. */
export interface DeviceCodePrompt {
  readonly userCode: string;
  readonly verificationUri: string;
}

/** What the sign-in entries are computed from. */
export interface SignInMenuState {
  readonly status: DaemonStatus | undefined;
  readonly signingIn: boolean;
  /** Names of the configured identity providers, the default first (none: nothing configured). */
  readonly choices: readonly string[];
  readonly deviceCode: DeviceCodePrompt | undefined;
  readonly busy: (action: SignInAction) => boolean;
}

export interface SignInEntry {
  readonly title: string;
  readonly enabled: boolean;
  readonly hidden: boolean;
  readonly action?: SignInAction;
}

/** Which configured identity provider an action signs in at (0: the default). */
export function issuerIndexOf(action: SignInAction): number {
  if (action === 'sign-in' || action === 'sign-in-code') return 0;
  return OTHER_ISSUER_KEYS.indexOf(action) + 1;
}

/** The title of the main sign-in entry while signed out. */
export function signInTitle(choices: readonly string[]): string {
  return choices.length > 1 ? `Sign in with ${choices[0]}…` : 'Sign in…';
}

/** The entries after the main one: other identity providers, the code sign-in, the code itself. */
export function signInEntries(
  state: SignInMenuState,
): Record<OtherIssuerKey | 'sign-in-code' | 'device-code', SignInEntry> {
  const signedOut = state.status?.state === 'logged-out';
  const offered = signedOut && !state.signingIn;
  const entries = {} as Record<OtherIssuerKey | 'sign-in-code' | 'device-code', SignInEntry>;
  OTHER_ISSUER_KEYS.forEach((key, i) => {
    const name = state.choices[i + 1];
    entries[key] = {
      title: name ? `Sign in with ${name}…` : '',
      enabled: offered && !state.busy(key),
      hidden: !(offered && name !== undefined),
      action: key,
    };
  });
  entries['sign-in-code'] = {
    title: 'Sign in with a code…',
    enabled: offered && !state.busy('sign-in-code'),
    hidden: !offered || state.choices.length === 0,
    action: 'sign-in-code',
  };
  const code = state.deviceCode;
  entries['device-code'] = {
    title: code ? `Code ${code.userCode} at ${code.verificationUri}` : '',
    enabled: false,
    hidden: code === undefined,
  };
  return entries;
}
