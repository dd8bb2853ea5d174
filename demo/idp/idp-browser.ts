/**
 * A person's part of a sign-in at the local IdP (local-idp.ts), done by program: follows the
 * authorization URL through the IdP's real login and consent pages (fills in the forms it serves, with
 * its cookies) up to the redirect to the client, or enters a device code on the verification page.
 * `cardlink demo --yes` signs the demo user in this way, through the real authorization endpoint; the
 * tests do the same for their accounts. It works with this IdP's pages only.
 */

/** Credentials typed into the login page. */
export interface IdpCredentials {
  readonly id: string;
  readonly password: string;
}

/** Longest chain of redirects and pages one sign-in may take. */
const MAX_STEPS = 20;

/** The first tag of a prompt's form on the IdP's pages (see promptForm in local-idp.ts). */
const PROMPT_FORM = /<form method="post" action="([^"]+)" data-prompt="(\w+)"/;

/** A cookie jar for one host: enough for the provider's session and interaction cookies. */
export class CookieJar {
  private readonly cookies = new Map<string, { value: string; path: string }>();

  store(response: Response): void {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      let path = '/';
      let expired = value === '';
      for (const a of attributes) {
        const [k, v = ''] = a.trim().split('=');
        if (k!.toLowerCase() === 'path') path = v;
        if (k!.toLowerCase() === 'expires' && Date.parse(v) <= Date.now()) expired = true;
        if (k!.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
      }
      const key = `${name};${path}`;
      if (expired) this.cookies.delete(key);
      else this.cookies.set(key, { value, path });
    }
  }

  header(url: URL): string {
    const out: string[] = [];
    for (const [key, c] of this.cookies) {
      if (
        url.pathname === c.path ||
        url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`) ||
        c.path === '/'
      ) {
        out.push(`${key.slice(0, key.indexOf(';'))}=${c.value}`);
      }
    }
    return out.join('; ');
  }
}

/** A failed step of the sign-in, with the page's status and path (never the credentials). */
export class IdpBrowserError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'IdpBrowserError';
  }
}

const unescapeHtml = (text: string) =>
  text.replace(/&(amp|lt|gt|quot|#39);/g, (_, e: string) =>
    e === 'amp' ? '&' : e === 'lt' ? '<' : e === 'gt' ? '>' : e === 'quot' ? '"' : "'",
  );

/**
 * Follows `start` (an authorization URL, or a page of a sign-in under way) through login and consent
 * as `credentials`, up to the first redirect for which `isClientRedirect` holds, and returns that
 * redirect's URL without fetching it. By default the client's redirect is any URL off the IdP's origin.
 */
export async function driveAuthorization(
  start: URL,
  credentials: IdpCredentials,
  options: { jar?: CookieJar; isClientRedirect?: (next: URL) => boolean } = {},
): Promise<URL> {
  const jar = options.jar ?? new CookieJar();
  const isClientRedirect = options.isClientRedirect ?? ((next: URL) => next.origin !== start.origin);
  let url = start;
  let method = 'GET';
  let body: URLSearchParams | undefined;
  for (let step = 0; step < MAX_STEPS; step++) {
    const headers: Record<string, string> = { cookie: jar.header(url) };
    if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
    const response = await fetch(url, { method, headers, body, redirect: 'manual' });
    jar.store(response);
    method = 'GET';
    body = undefined;
    const location = response.headers.get('location');
    if (response.status >= 300 && response.status < 400 && location) {
      await response.arrayBuffer();
      const next = new URL(location, url);
      if (isClientRedirect(next)) return next;
      url = next;
      continue;
    }
    const text = await response.text();
    const form = response.ok ? PROMPT_FORM.exec(text) : null;
    if (form) {
      url = new URL(unescapeHtml(form[1]!), url);
      method = 'POST';
      if (form[2] === 'login')
        body = new URLSearchParams({ login: credentials.id, password: credentials.password });
      else if (form[2] === 'consent') body = new URLSearchParams();
      else throw new IdpBrowserError(`the IdP asked for an unexpected step (${form[2]})`);
      continue;
    }
    if (response.ok) return url;
    const reason = response.status === 401 ? ': wrong user name or password' : '';
    throw new IdpBrowserError(
      `the IdP answered ${response.status} at ${url.pathname}${reason}: ${text
        .replace(/<[^>]*>/g, ' ')
        .trim()
        .slice(0, 300)}`,
      response.status,
    );
  }
  throw new IdpBrowserError('too many steps in the sign-in');
}

/**
 * A person's part of a device login (RFC 8628 section 3.3) at `verificationUri`: enters `userCode`,
 * then confirms, signs in as `credentials` and consents, or, with 'deny', aborts at the confirmation
 * (the device code then ends in access_denied).
 */
export async function enterDeviceCode(
  userCode: string,
  verificationUri: string,
  credentials: IdpCredentials | 'deny',
): Promise<void> {
  const jar = new CookieJar();
  const page = await fetch(verificationUri, { headers: { cookie: '' } });
  jar.store(page);
  const xsrf = /name="xsrf" value="([^"]+)"/.exec(await page.text())?.[1];
  if (!xsrf) throw new IdpBrowserError('no xsrf token on the device page', page.status);
  const submit = new URL(verificationUri);
  const post = async (fields: Record<string, string>) => {
    const response = await fetch(submit, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: jar.header(submit) },
      body: new URLSearchParams(fields),
      redirect: 'manual',
    });
    jar.store(response);
    return response;
  };
  // The code entry answers with a confirmation page ("is this the code on your device?").
  const entered = await post({ xsrf, user_code: userCode });
  const confirmXsrf = /name="xsrf" value="([^"]+)"/.exec(await entered.text())?.[1];
  if (!entered.ok || !confirmXsrf)
    throw new IdpBrowserError(`device code not accepted (${entered.status})`, entered.status);
  if (credentials === 'deny') {
    const aborted = await post({ xsrf: confirmXsrf, user_code: userCode, abort: 'yes' });
    await aborted.arrayBuffer();
    if (aborted.status >= 500)
      throw new IdpBrowserError(`device abort failed (${aborted.status})`, aborted.status);
    return;
  }
  const confirmed = await post({ xsrf: confirmXsrf, user_code: userCode, confirm: 'yes' });
  await confirmed.arrayBuffer();
  const location = confirmed.headers.get('location');
  if (!location)
    throw new IdpBrowserError(`device confirmation not accepted (${confirmed.status})`, confirmed.status);
  // The sign-in ends on the IdP's own success page: no redirect leaves it.
  await driveAuthorization(new URL(location, submit), credentials, { jar, isClientRedirect: () => false });
}
