// The api client: login, token refresh and authenticated JSON requests.
//
// The access token lives in memory only; the refresh token in localStorage, so a reload
// (or a new tab) gets a fresh access token without asking for the password again. A 401 is
// answered by one refresh and a retry; when the refresh fails too, the session is over and
// `onExpired` tells the page. Others that present the token elsewhere (the browser phone sends
// it in its SIP REGISTER) ask `freshToken()` for one valid long enough, and `onToken` tells them
// each new one.

const REFRESH_KEY = 'switchboard.refresh_token';

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
}

export class ApiError extends Error {
  constructor(public status: number, public problem: Problem | null) {
    super(problem?.detail ?? problem?.title ?? `HTTP ${status}`);
  }
}

/** The session ended (refresh token refused): log in again. */
export class SessionExpired extends Error {}

interface TokenResponse {
  access_token: string;
  refresh_token: string;
  expires_in: number;
}

export class Api {
  private access: string | null = null;
  /** When the access token expires (ms since the epoch, with a margin for clock skew). */
  private accessExpiresAt = 0;
  private refreshing: Promise<boolean> | null = null;
  onExpired: () => void = () => {};
  /** Called with every new access token. */
  onToken: (token: string) => void = () => {};

  hasSession(): boolean {
    return localStorage.getItem(REFRESH_KEY) !== null;
  }

  async login(tenant: string, email: string, password: string): Promise<void> {
    const t = await this.raw<TokenResponse>('POST', '/v1/auth/login', { tenant, email, password }, null);
    this.keep(t);
  }

  async logout(): Promise<void> {
    const refresh_token = localStorage.getItem(REFRESH_KEY);
    try {
      if (this.access && refresh_token) {
        await this.raw('POST', '/v1/auth/logout', { refresh_token }, this.access);
      }
    } finally {
      this.forget();
    }
  }

  forget(): void {
    this.access = null;
    this.accessExpiresAt = 0;
    localStorage.removeItem(REFRESH_KEY);
  }

  private keep(t: TokenResponse): void {
    this.access = t.access_token;
    this.accessExpiresAt = Date.now() + Math.max(0, t.expires_in - 10) * 1000;
    localStorage.setItem(REFRESH_KEY, t.refresh_token);
    this.onToken(t.access_token);
  }

  /**
   * An access token still valid for `minValidMs` (refreshed first when it is not, or when
   * `force`); throws SessionExpired (after `onExpired`) when the session is over.
   */
  async freshToken(minValidMs = 60_000, force = false): Promise<string> {
    if (force || !this.access || this.accessExpiresAt - Date.now() < minValidMs) {
      if (!(await this.refresh())) {
        this.onExpired();
        throw new SessionExpired();
      }
    }
    if (!this.access) throw new SessionExpired();
    return this.access;
  }

  /** Trades the stored refresh token for new tokens; false when the session is over. */
  private refresh(): Promise<boolean> {
    if (!this.refreshing) {
      this.refreshing = (async () => {
        const refresh_token = localStorage.getItem(REFRESH_KEY);
        if (!refresh_token) return false;
        try {
          this.keep(await this.raw<TokenResponse>('POST', '/v1/auth/refresh', { refresh_token }, null));
          return true;
        } catch (e) {
          if (e instanceof ApiError && e.status === 401) {
            this.forget();
            return false;
          }
          throw e;
        }
      })().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  /** An authenticated request; refreshes the access token once on 401. */
  async req<T>(method: string, path: string, body?: unknown): Promise<T> {
    if (!this.access && !(await this.refresh())) {
      this.onExpired();
      throw new SessionExpired();
    }
    try {
      return await this.raw<T>(method, path, body, this.access);
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 401) throw e;
      if (!(await this.refresh())) {
        this.onExpired();
        throw new SessionExpired();
      }
      return await this.raw<T>(method, path, body, this.access);
    }
  }

  private async raw<T>(method: string, path: string, body: unknown, token: string | null): Promise<T> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (token) headers['authorization'] = `Bearer ${token}`;
    const resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await resp.text();
    const json = text ? JSON.parse(text) : null;
    if (!resp.ok) throw new ApiError(resp.status, json as Problem | null);
    return json as T;
  }
}
