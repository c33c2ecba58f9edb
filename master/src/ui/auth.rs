//! Who may see the web UI and the API. With a cluster secret set, every
//! page needs it except `/healthz`, `/login` and `/metrics` (which has its
//! own optional token): a page asked for without it answers 401 with a
//! login form, and the browser, once logged in, keeps a session cookie; an API client sends the secret in `X-Spate-Secret` or
//! `Authorization: Bearer <secret>`. Secrets compare in constant time.

use std::sync::Arc;

use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use spate_proto::auth::{AUTHORIZATION, SECRET_HEADER, carries};

use crate::Master;

/// The session cookie the login form sets.
pub const COOKIE: &str = "spate_session";

/// The session cookie's value: an HMAC of a fixed text under the secret,
/// so the cookie proves the secret without being it.
pub fn session_token(secret: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, b"spate web ui session");
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Whether a request carries the secret: a header, or the session cookie.
fn authorized(secret: &str, headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if carries(secret.as_bytes(), header(SECRET_HEADER))
        || carries(secret.as_bytes(), header(AUTHORIZATION))
    {
        return true;
    }
    cookie(headers, COOKIE).is_some_and(|c| carries(session_token(secret).as_bytes(), Some(&c)))
}

/// The UI's guard, before every route.
pub async fn require(State(master): State<Arc<Master>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if path == "/metrics" {
        let Some(token) = master.config.metrics_token.as_deref() else {
            return next.run(request).await;
        };
        let given = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if carries(token.as_bytes(), given) {
            return next.run(request).await;
        }
        return (
            StatusCode::UNAUTHORIZED,
            "/metrics needs its token: Authorization: Bearer <ui.metrics_token>\n",
        )
            .into_response();
    }
    let Some(secret) = master.config.secret.as_deref() else {
        return next.run(request).await;
    };
    if matches!(path.as_str(), "/healthz" | "/login") || authorized(secret, request.headers()) {
        return next.run(request).await;
    }
    if path.starts_with("/api/") {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({
                "error": "this cluster has a secret: send it as X-Spate-Secret or Authorization: Bearer <secret>"
            })),
        )
            .into_response();
    }
    // A page asks for the secret in place: the form logs in and comes back.
    let next_page = if request.method() == axum::http::Method::GET {
        path
    } else {
        "/".to_string()
    };
    (StatusCode::UNAUTHORIZED, login_page(&next_page, false)).into_response()
}

#[derive(Deserialize)]
pub struct NextPage {
    #[serde(default)]
    next: String,
}

/// A page of ours to go to after logging in (never another site).
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") {
        next
    } else {
        "/"
    }
}

fn login_page(next: &str, wrong: bool) -> Html<String> {
    let page = html! {
        (maud::DOCTYPE)
        html {
            head { meta charset="utf-8"; title { "Spate: log in" } style { (super::pages::STYLE) } }
            body {
                h1 { "Spate" }
                p { "This cluster has a secret. Enter it once; the browser keeps a session cookie." }
                @if wrong { p.FAILED { "That is not the cluster's secret." } }
                form method="post" action="/login" {
                    input type="hidden" name="next" value=(next);
                    input type="password" name="secret" placeholder="cluster secret" autofocus required;
                    " "
                    button type="submit" { "Log in" }
                }
            }
        }
    };
    Html(page.into_string())
}

pub async fn login_form(Query(next): Query<NextPage>) -> Html<String> {
    login_page(safe_next(&next.next), false)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    secret: String,
    #[serde(default)]
    next: String,
}

pub async fn login(State(master): State<Arc<Master>>, Form(form): Form<LoginForm>) -> Response {
    let next = safe_next(&form.next).to_string();
    let Some(secret) = master.config.secret.as_deref() else {
        return Redirect::to(&next).into_response();
    };
    if !carries(secret.as_bytes(), Some(&form.secret)) {
        return (StatusCode::UNAUTHORIZED, login_page(&next, true)).into_response();
    }
    let secure = if master.config.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/{secure}",
        session_token(secret)
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response()
}

/// `/healthz`: answers while the master serves, with no secret needed.
pub async fn healthz() -> &'static str {
    "ok\n"
}
