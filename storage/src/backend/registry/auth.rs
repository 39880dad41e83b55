//! Registry authentication: anonymous, Basic, and the Bearer token flow of
//! the Docker/OCI distribution spec.
//!
//! The first request goes out anonymously (or with a configured
//! `registry_token`). A `401` carries `WWW-Authenticate`, which says what
//! the registry wants: `Basic realm=...` (we then send `auth`), or `Bearer
//! realm=...,service=...,scope=...` (we fetch a token from the realm,
//! presenting `auth` if we have it, and send it as `Authorization: Bearer`).
//!
//! Tokens are cached and refreshed shortly before they expire (with jitter)
//! or when the registry answers 401 to them. Only one thread refreshes at a
//! time: the others wait for it and reuse its token (a generation counter
//! tells them someone else already refreshed), so a burst of readers
//! hitting an expired token makes one token request, not hundreds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::AUTHORIZATION;
use reqwest::{StatusCode, Url};

use crate::backend::http::{random_u64, redact, status_failure, transport_failure, Attempt, Failure, HttpClient};
use crate::config::Secret;
use crate::error::StorageError;

/// Token lifetime assumed when the token server does not say (the
/// distribution spec's default).
const DEFAULT_TOKEN_SECS: u64 = 60;

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// `basic` or `bearer`, lower-cased.
    pub(crate) scheme: String,
    /// Parameters (`realm`, `service`, `scope`, ...), names lower-cased.
    pub(crate) params: Vec<(String, String)>,
}

impl Challenge {
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Parse the first challenge of a `WWW-Authenticate` value:
/// `Scheme k1="v1", k2=v2, ...` (quoted values may hold `,` and `\"`).
pub(crate) fn parse_challenge(v: &str) -> Option<Challenge> {
    let v = v.trim();
    let (scheme, mut rest) = match v.find(char::is_whitespace) {
        Some(i) => (&v[..i], v[i..].trim_start()),
        None => (v, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let name = rest[..eq].trim().to_ascii_lowercase();
        if name.is_empty() || name.contains(char::is_whitespace) {
            // Start of a second challenge: stop at the first one.
            break;
        }
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(q) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, c2)) = chars.next() {
                            out.push(c2);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => out.push(c),
                }
            }
            let end = end?;
            value = out;
            rest = &q[end + 1..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        params.push((name, value));
        rest = rest.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(Challenge { scheme: scheme.to_ascii_lowercase(), params })
}

#[derive(Debug)]
struct Token {
    value: Secret,
    refresh_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// What the registry asked for; `None` until the first 401.
    challenge: Option<Challenge>,
    token: Option<Token>,
    /// Bumped on every token refresh.
    generation: u64,
}

/// The `Authorization` value of a request, and the token generation it
/// was taken from (so a 401 can tell whether someone refreshed since).
#[derive(Debug, Clone)]
pub(crate) struct Credential {
    pub(crate) header: Option<Secret>,
    generation: u64,
}

/// Authentication state of one registry backend.
#[derive(Debug)]
pub(crate) struct Auth {
    /// base64 of `user:password`.
    basic: Option<Secret>,
    static_token: Option<Secret>,
    /// `repository:<repo>:pull`, the scope asked for when the challenge has none.
    default_scope: String,
    state: Mutex<State>,
    refresh: Mutex<()>,
}

fn auth_error(blob_id: &str, url: &str, cause: impl Into<String>) -> Failure {
    Failure::Fatal(StorageError::Auth { blob_id: blob_id.to_string(), url: url.to_string(), cause: cause.into() })
}

impl Auth {
    pub(crate) fn new(basic: Option<Secret>, static_token: Option<Secret>, repo: &str) -> Self {
        Self {
            basic: basic.filter(|s| !s.expose().is_empty()),
            static_token: static_token.filter(|s| !s.expose().is_empty()),
            default_scope: format!("repository:{repo}:pull"),
            state: Mutex::new(State::default()),
            refresh: Mutex::new(()),
        }
    }

    /// Ask token servers for `scope` when a challenge names none (uploads
    /// need `repository:<repo>:push,pull`).
    pub(crate) fn with_default_scope(mut self, scope: String) -> Self {
        self.default_scope = scope;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The credential for the next registry request; refreshes a token that
    /// is about to expire.
    pub(crate) fn credential(&self, http: &HttpClient, blob_id: &str) -> Attempt<Credential> {
        if let Some(t) = &self.static_token {
            return Ok(Credential { header: Some(Secret::new(format!("Bearer {}", t.expose()))), generation: 0 });
        }
        let (scheme, generation, token) = {
            let s = self.lock();
            let scheme = s.challenge.as_ref().map(|c| c.scheme.clone());
            let token = s.token.as_ref().map(|t| (t.value.clone(), Instant::now() < t.refresh_at));
            (scheme, s.generation, token)
        };
        let header = match (scheme.as_deref(), token) {
            (Some("basic"), _) => self.basic.as_ref().map(|b| format!("Basic {}", b.expose())),
            (Some("bearer"), Some((t, true))) => Some(format!("Bearer {}", t.expose())),
            (Some("bearer"), _) => {
                self.refresh(http, blob_id, generation)?;
                return self.credential(http, blob_id);
            }
            _ => None,
        };
        Ok(Credential { header: header.map(Secret::new), generation })
    }

    /// React to a 401 from `url` to a request sent with `sent`. `Ok` means
    /// "try again with a fresh credential".
    pub(crate) fn unauthorized(
        &self,
        http: &HttpClient,
        blob_id: &str,
        url: &str,
        www_authenticate: Option<&str>,
        sent: &Credential,
    ) -> Attempt<()> {
        if self.static_token.is_some() {
            return Err(auth_error(
                blob_id,
                url,
                "the registry rejected `registry_token`; it may have expired: give a fresh one, or `auth` instead",
            ));
        }
        let Some(ch) = www_authenticate.and_then(parse_challenge) else {
            return Err(auth_error(blob_id, url, "401 Unauthorized without a usable WWW-Authenticate header"));
        };
        match ch.scheme.as_str() {
            "basic" => {
                if self.basic.is_none() {
                    return Err(auth_error(blob_id, url, "the registry requires credentials (Basic); set `auth` to base64 of user:password, or IMAGE_PULL_AUTH"));
                }
                let mut s = self.lock();
                let was_basic = s.challenge.as_ref().is_some_and(|c| c.scheme == "basic");
                if was_basic && sent.header.is_some() {
                    return Err(auth_error(
                        blob_id,
                        url,
                        "the registry rejected the credentials in `auth` (Basic); check user and password",
                    ));
                }
                s.challenge = Some(ch);
                Ok(())
            }
            "bearer" => {
                if ch.param("realm").is_none() {
                    return Err(auth_error(blob_id, url, "Bearer challenge without a realm"));
                }
                {
                    let mut s = self.lock();
                    if s.challenge.as_ref() != Some(&ch) {
                        s.challenge = Some(ch);
                    }
                }
                self.refresh(http, blob_id, sent.generation)
            }
            other => Err(auth_error(blob_id, url, format!("unsupported authentication scheme `{other}`"))),
        }
    }

    /// Fetch a new token unless someone did since `seen_generation`.
    fn refresh(&self, http: &HttpClient, blob_id: &str, seen_generation: u64) -> Attempt<()> {
        let _one_at_a_time = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
        let challenge = {
            let s = self.lock();
            if s.generation != seen_generation && s.token.as_ref().is_some_and(|t| Instant::now() < t.refresh_at) {
                return Ok(());
            }
            match s.challenge.clone() {
                Some(c) => c,
                None => return Ok(()),
            }
        };
        let (token, lifetime) = self.fetch_token(http, blob_id, &challenge)?;
        // Refresh when 80-90% of the lifetime has passed.
        let secs = lifetime.as_secs_f64();
        let at = secs * 0.8 + secs * 0.1 * (random_u64() % 1000) as f64 / 1000.0;
        let mut s = self.lock();
        s.token = Some(Token { value: token, refresh_at: Instant::now() + Duration::from_secs_f64(at) });
        s.generation += 1;
        Ok(())
    }

    fn fetch_token(&self, http: &HttpClient, blob_id: &str, ch: &Challenge) -> Attempt<(Secret, Duration)> {
        let realm = ch.param("realm").unwrap_or_default();
        let mut url = Url::parse(realm).map_err(|e| auth_error(blob_id, realm, format!("bad token realm: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = ch.param("service") {
                q.append_pair("service", s);
            }
            q.append_pair("scope", ch.param("scope").unwrap_or(&self.default_scope));
        }
        let shown = redact(&url);
        let mut req = http.client().get(url);
        if let Some(b) = &self.basic {
            req = req.header(AUTHORIZATION, format!("Basic {}", b.expose()));
        }
        let resp = http.send(req).map_err(transport_failure)?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let why = if self.basic.is_some() {
                "the token server rejected the credentials in `auth`; check user and password"
            } else {
                "the token server requires credentials; set `auth` to base64 of user:password, or IMAGE_PULL_AUTH"
            };
            return Err(auth_error(blob_id, &shown, why));
        }
        if !status.is_success() {
            return Err(status_failure(status, resp.headers(), blob_id, &shown, "check the token realm"));
        }
        let text = resp.text().map_err(transport_failure)?;
        let body: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| auth_error(blob_id, &shown, format!("token response is not JSON: {e}")))?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| auth_error(blob_id, &shown, "token response has no `token`"))?;
        let secs = body.get("expires_in").and_then(|v| v.as_u64()).filter(|&s| s > 0).unwrap_or(DEFAULT_TOKEN_SECS);
        Ok((Secret::new(token), Duration::from_secs(secs)))
    }
}

/// Encode `user:password` the way `auth` holds it.
#[cfg(test)]
pub(crate) fn basic_auth(user: &str, pass: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}

/// Check that `auth` decodes to `user:password` (catches a plain
/// `user:password` written where base64 is expected).
pub(crate) fn check_basic(auth: &str) -> Result<(), String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| "is not base64 of user:password".to_string())?;
    let text = String::from_utf8(raw).map_err(|_| "does not decode to UTF-8 text".to_string())?;
    if !text.contains(':') {
        return Err("does not decode to user:password (no `:`)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:15003/token",service="test-registry",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("http://127.0.0.1:15003/token"));
        assert_eq!(c.param("service"), Some("test-registry"));
        assert_eq!(c.param("scope"), Some("repository:a/b:pull,push"));

        let c = parse_challenge(r#"Basic realm="basic-realm""#).unwrap();
        assert_eq!((c.scheme.as_str(), c.param("realm")), ("basic", Some("basic-realm")));

        let c = parse_challenge(r#"bearer  Realm = "a\"b" , error=invalid_token"#).unwrap();
        assert_eq!(c.param("realm"), Some("a\"b"));
        assert_eq!(c.param("error"), Some("invalid_token"));

        assert_eq!(parse_challenge("Basic").unwrap().params, vec![]);
        assert!(parse_challenge("").is_none());
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
        assert!(parse_challenge("Bearer realm").is_none());
    }

    #[test]
    fn basic_auth_must_be_base64_user_pass() {
        check_basic(&basic_auth("u", "p")).unwrap();
        assert!(check_basic("u:p").is_err());
        assert!(check_basic("dXNlcg==").is_err()); // "user"
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let a = Auth::new(Some(Secret::new("c2VjcmV0OnB3")), Some(Secret::new("tok")), "r");
        let s = format!("{a:?}");
        assert!(!s.contains("c2VjcmV0OnB3") && !s.contains("tok\""), "{s}");
    }
}
