//! Who may use the console and which requests may change anything.
//!
//! - With a token, every request must carry it: `Authorization: Bearer TOKEN` (scripts), or the
//!   session cookie the login form sets (HttpOnly, SameSite=Strict; its value is a random
//!   session secret, not the token). Without either: 401, and a browser gets the login form.
//!   Comparisons are constant-time (`subtle`).
//! - State-changing requests are POST. `--read-only` refuses every one with 403 before anything
//!   else is looked at. A browser's POST (anything not authorised by a bearer header) must carry
//!   an `Origin` equal to the console's own and the page's CSRF token (a random secret of this
//!   process, in a hidden field of every form).
//! - Every answer carries a Content-Security-Policy without inline script or style
//!   (`script-src 'self'`), `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin` (with `no-referrer` browsers send `Origin: null`)
//!   and `Cache-Control: no-store`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{pages, App};

pub const SESSION_COOKIE: &str = "sqskit_console_session";
/// The form field holding the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// Largest form body accepted (a selection of ids, a message body up to SQS's 1 MiB and some).
const MAX_FORM_BYTES: usize = 1_200_000;

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub struct Security {
    token: Option<String>,
    session: String,
    csrf: String,
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness from the operating system: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equal in time independent of where they differ (the length is not hidden).
fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

impl Security {
    pub fn new(token: Option<String>) -> anyhow::Result<Self> {
        Ok(Self { token, session: random_hex(32)?, csrf: random_hex(32)? })
    }

    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    pub fn needs_login(&self) -> bool {
        self.token.is_some()
    }

    fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else { return false };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| same(given.trim(), token))
    }

    fn cookie_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .any(|(k, v)| k == SESSION_COOKIE && same(v, &self.session))
    }

    /// Whether `given` is the token (the login form).
    pub fn token_matches(&self, given: &str) -> bool {
        self.token.as_deref().is_some_and(|t| same(given, t))
    }

    /// The `Set-Cookie` value of a logged-in browser.
    pub fn session_cookie(&self) -> String {
        format!("{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", self.session)
    }

    pub fn csrf_ok(&self, given: &str) -> bool {
        same(given, &self.csrf)
    }
}

/// The console's own origin as a browser names it, from the `Host` header.
fn origin_ok(headers: &HeaderMap) -> Result<(), &'static str> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).ok_or("no Host header")?;
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).ok_or("no Origin header")?;
    let own = [format!("http://{host}"), format!("https://{host}")];
    if own.iter().any(|o| o == origin) {
        Ok(())
    } else {
        Err("the Origin is not this console")
    }
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, pages::refused(status, why)).into_response()
}

/// Authentication, the read-only switch, Origin and CSRF checks, and the security headers.
pub async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let mut resp = check(&app, req, next).await;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp
}

async fn check(app: &App, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let public = path == "/login" || path.starts_with("/assets/");
    let bearer = app.security.bearer_ok(req.headers());
    if app.security.needs_login() && !public && !bearer && !app.security.cookie_ok(req.headers()) {
        let html =
            req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
        let mut resp = if html && req.method() == Method::GET {
            let next_path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
            (StatusCode::UNAUTHORIZED, pages::login(&next_path, None)).into_response()
        } else {
            (StatusCode::UNAUTHORIZED, "a token is required: log in, or send Authorization: Bearer TOKEN\n")
                .into_response()
        };
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    if req.method() != Method::POST {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "only GET and POST are served");
    }
    if app.read_only && path != "/login" {
        tracing::warn!(path, "refused a state-changing request: the console is read-only");
        return refuse(StatusCode::FORBIDDEN, "this console is read-only (--read-only): nothing was changed");
    }
    if !bearer {
        if let Err(why) = origin_ok(req.headers()) {
            tracing::warn!(path, why, "refused a POST");
            return refuse(StatusCode::FORBIDDEN, &format!("{why}: nothing was changed"));
        }
    }
    let (parts, body) = req.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(b) => b,
        Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"),
    };
    if !bearer && path != "/login" {
        let given = form_urlencoded::parse(&bytes).find(|(k, _)| k == CSRF_FIELD).map(|(_, v)| v.into_owned());
        if !given.is_some_and(|g| app.security.csrf_ok(&g)) {
            tracing::warn!(path, "refused a POST without this console's CSRF token");
            return refuse(
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or not this console's: nothing was changed",
            );
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}
