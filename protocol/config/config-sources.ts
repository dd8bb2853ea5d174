/**
 * The settings machinery shared by the card server and the daemon: a JSON config file, environment
 * variables and command-line flags, each a `ConfigSource` that checks the values it holds and names
 * itself in errors. Later sources win (file < environment < flags). A bad value throws
 * `ConfigError` naming the key and its source, never the value (it may be a secret).
 */
import fs from 'node:fs';
import { CardlinkError } from '../errors.js';

/** Largest config file read. */
export const MAX_CONFIG_FILE_BYTES = 256 * 1024;

export class ConfigError extends CardlinkError {
  constructor(key: string, source: string, problem: string) {
    super('ERR_CONFIG_INVALID', `${source}: setting "${key}" ${problem}`, { key, source });
    this.name = 'ConfigError';
  }
}

export type RawSettings = Record<string, unknown>;

/** Reads one dotted key of a nested object. */
export function pickSetting(raw: RawSettings, key: string): unknown {
  let node: unknown = raw;
  for (const part of key.split('.')) {
    if (node === null || typeof node !== 'object' || Array.isArray(node)) return undefined;
    node = (node as RawSettings)[part];
  }
  return node;
}

/** Sets one dotted key, creating the objects on the way. */
export function setSetting(raw: RawSettings, key: string, value: unknown): void {
  const parts = key.split('.');
  let node = raw;
  for (const part of parts.slice(0, -1)) {
    const next = node[part];
    node = (next !== null && typeof next === 'object' ? next : (node[part] = {})) as RawSettings;
  }
  node[parts[parts.length - 1]!] = value;
}

/** The values of one source (the file, an env variable, the flags), checked as they are read. */
export class ConfigSource {
  constructor(
    readonly name: string,
    readonly values: RawSettings,
  ) {}

  has(key: string): boolean {
    return pickSetting(this.values, key) !== undefined;
  }

  string(key: string): string | undefined {
    const v = pickSetting(this.values, key);
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v.length === 0 || v.length > 4096)
      throw new ConfigError(key, this.name, 'must be a non-empty string');
    return v;
  }

  int(key: string, min: number, max: number): number | undefined {
    let v = pickSetting(this.values, key);
    if (v === undefined) return undefined;
    if (typeof v === 'string' && /^\d+$/.test(v)) v = Number(v);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new ConfigError(key, this.name, `must be a whole number from ${min} to ${max}`);
    }
    return v;
  }

  boolean(key: string): boolean | undefined {
    const v = pickSetting(this.values, key);
    if (v === undefined) return undefined;
    if (v === true || v === 'true' || v === '1') return true;
    if (v === false || v === 'false' || v === '0') return false;
    throw new ConfigError(key, this.name, 'must be true or false');
  }

  oneOf<T extends string>(key: string, allowed: readonly T[]): T | undefined {
    const v = this.string(key);
    if (v === undefined) return undefined;
    if (!(allowed as readonly string[]).includes(v))
      throw new ConfigError(key, this.name, `must be one of ${allowed.join(', ')}`);
    return v as T;
  }
}

/**
 * Reads a JSON config file whose top-level keys must all be in `knownKeys`; `docs` names the
 * document that lists the settings (for the error on an unknown key).
 */
export function readConfigFile(file: string, knownKeys: ReadonlySet<string>, docs: string): ConfigSource {
  let text: string;
  try {
    const stat = fs.statSync(file);
    if (!stat.isFile()) throw new ConfigError('config', file, 'must name a regular file');
    if (stat.size > MAX_CONFIG_FILE_BYTES)
      throw new ConfigError('config', file, `is larger than ${MAX_CONFIG_FILE_BYTES} bytes`);
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(
      'config',
      file,
      `cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new ConfigError('config', file, `is not valid JSON (${(error as Error).message})`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError('config', file, 'must hold a JSON object');
  }
  for (const key of Object.keys(parsed)) {
    if (!knownKeys.has(key)) throw new ConfigError(key, file, `is not a known setting (see ${docs})`);
  }
  return new ConfigSource(file, parsed as RawSettings);
}

/**
 * Refuses unknown keys inside the file's sections (`{"timeouts": {"comandSeconds": 5}}`): a typo
 * must fail loudly, not leave the default in force. `sections` maps a top-level key to its keys.
 */
export function checkSectionKeys(
  file: ConfigSource,
  sections: Readonly<Record<string, readonly string[]>>,
  docs: string,
): void {
  for (const [section, keys] of Object.entries(sections)) {
    const value = file.values[section];
    if (value === undefined) continue;
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      throw new ConfigError(section, file.name, 'must be an object');
    for (const key of Object.keys(value)) {
      if (!keys.includes(key))
        throw new ConfigError(`${section}.${key}`, file.name, `is not a known setting (see ${docs})`);
    }
  }
}

/** One source per set variable of `variables` (variable name -> dotted key); `config` is skipped. */
export function environmentSources(
  env: NodeJS.ProcessEnv,
  variables: Readonly<Record<string, string>>,
): ConfigSource[] {
  const sources: ConfigSource[] = [];
  for (const [variable, key] of Object.entries(variables)) {
    const value = env[variable];
    if (value === undefined || value === '' || key === 'config') continue;
    const raw: RawSettings = {};
    setSetting(raw, key, value);
    sources.push(new ConfigSource(`environment variable ${variable}`, raw));
  }
  return sources;
}

/** The value of `key` from the last source that sets it, and that source's name. */
export function lastSetting<T>(
  sources: readonly ConfigSource[],
  get: (s: ConfigSource) => T | undefined,
): { value: T; source: string } | undefined {
  let found: { value: T; source: string } | undefined;
  for (const s of sources) {
    const v = get(s);
    if (v !== undefined) found = { value: v, source: s.name };
  }
  return found;
}

export function isLoopbackHost(host: string): boolean {
  return (
    host === '127.0.0.1' ||
    host === '::1' ||
    host === '[::1]' ||
    host === 'localhost' ||
    host.startsWith('127.')
  );
}

/** `value` as an absolute URL of one of `protocols` (`'https:'`), or ConfigError. */
export function checkUrl(value: string, key: string, source: string, protocols: readonly string[]): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(key, source, 'must be an absolute URL');
  }
  if (!protocols.includes(url.protocol))
    throw new ConfigError(key, source, `must be a ${protocols.join(' or ')} URL`);
  return url.href;
}
