import { isAbsolute, resolve } from 'node:path';
import { CardlinkError } from '../../protocol/errors.js';

/**
 * Where the card server keeps its state, from one URL:
 * - `sqlite:/var/lib/cardlink/cardlink.db` (absolute or relative path; the file is created on first
 *   start) or `sqlite::memory:` (tests);
 * - `postgres://user@host:5432/db` or `postgresql://...` (any libpq-style URL `pg` accepts).
 */
export type DatabaseLocation =
  | { readonly dialect: 'sqlite'; readonly path: string; readonly memory: boolean }
  | { readonly dialect: 'postgres'; readonly connectionString: string };

/** The default when no URL is configured: a SQLite file in the working directory. */
export const DEFAULT_DATABASE_URL = 'sqlite:cardlink.db';

export function parseDatabaseUrl(url: string): DatabaseLocation {
  if (url.startsWith('sqlite:')) {
    const rest = url.slice('sqlite:'.length);
    if (rest === ':memory:') return { dialect: 'sqlite', path: ':memory:', memory: true };
    // Accept sqlite:///abs/path as well as sqlite:/abs/path and sqlite:relative/path.
    const path = rest.startsWith('//') ? rest.slice(2) : rest;
    if (path.length === 0) {
      throw new CardlinkError('ERR_CONFIG_INVALID', 'sqlite database URL without a path', {
        setting: 'database',
      });
    }
    return { dialect: 'sqlite', path: isAbsolute(path) ? path : resolve(path), memory: false };
  }
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    return { dialect: 'postgres', connectionString: url };
  }
  // The URL may carry a password: name only its scheme.
  const scheme = /^[a-z][a-z0-9+.-]*:/i.exec(url)?.[0] ?? '(none)';
  throw new CardlinkError('ERR_CONFIG_INVALID', 'unsupported database URL scheme (sqlite: or postgres://)', {
    setting: 'database',
    scheme,
  });
}
