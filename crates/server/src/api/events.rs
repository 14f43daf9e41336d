//! `/v1/events`: the event log, paged with a cursor or streamed as server-sent
//! events; and the layer that writes one `api` event per call that changed
//! something.
//!
//! An `api` event holds the method, the path template, the status and the token's
//! name: never the token, its hash, a request body or a password.

use super::problems::Unprocessable;
use crate::error::ApiError;
use crate::Ctx;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::Response;
use axum::Json;
use berth_model::{Event, EventKind, NewEvent};
use berth_store::EventFilter;
use futures_util::stream::Stream;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;
use tracing::warn;

/// The name of the token a request came with (set by the token layer).
#[derive(Clone, Debug)]
pub(crate) struct TokenName(pub(crate) String);

/// The instance a call was about, when its path does not say (a create): set by the
/// handler on its response.
#[derive(Clone, Debug)]
pub(crate) struct EventSubject(pub(crate) String);

/// Filters and the cursor.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventQuery {
    /// Only events of the instance of this name (deleted ones too).
    instance: Option<String>,
    /// Only events at or after this time: RFC 3339, or an age like `10m`, `2h`, `7d`
    /// (a whole number and one of s, m, h, d, w). A time of the right shape that is
    /// no date (February 30th) is 422.
    #[param(
        pattern = r"^([0-9]{1,9}[smhdw]|[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2}))$"
    )]
    since: Option<String>,
    /// Only events after this seq (the `next` of the previous page).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// At most this many, oldest first (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

impl EventQuery {
    fn filter(self, last_event_id: Option<i64>) -> Result<EventFilter, ApiError> {
        let limit = self.limit.unwrap_or(100);
        if limit == 0 || limit > 1000 {
            return Err(ApiError::InvalidRequest(format!(
                "limit {limit} is out of range; use 1 to 1000"
            )));
        }
        let after = last_event_id.or(self.after).unwrap_or(0);
        if after < 0 {
            return Err(ApiError::InvalidRequest(format!(
                "after {after} is out of range; use a seq of 0 or more"
            )));
        }
        let since = self.since.as_deref().map(parse_since).transpose()?;
        Ok(EventFilter {
            instance: self.instance,
            since,
            after,
            limit,
        })
    }
}

/// `since` as an event time: RFC 3339 as it is, an age counted back from now.
fn parse_since(s: &str) -> Result<String, ApiError> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(berth_store::event_time(t));
    }
    let age = berth_model::event::parse_age(s).map_err(|_| {
        let msg = format!("since {s:?} is neither an RFC 3339 time nor an age like 10m, 2h or 7d");
        // The shape of a time, but no such time: well-formed, refused.
        let b = s.as_bytes();
        let looks_like_time = b.len() > 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-';
        if looks_like_time {
            ApiError::Unprocessable(msg)
        } else {
            ApiError::InvalidRequest(msg)
        }
    })?;
    let age = time::Duration::try_from(age).unwrap_or(time::Duration::MAX);
    Ok(berth_store::event_time(
        time::OffsetDateTime::now_utc()
            .checked_sub(age)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
    ))
}

/// One page of the log.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventPage {
    /// The events, oldest first.
    pub events: Vec<Event>,
    /// The cursor: pass it as `after` for the next page (the last seq returned, or
    /// `after` again when there was none).
    pub next: i64,
    /// The oldest event the log still holds (older ones were removed by retention).
    pub oldest_seq: Option<i64>,
    /// Its time.
    pub oldest_time: Option<String>,
    /// Every event up to this seq was removed by retention (0: none was); a gap
    /// below it is retention, never loss.
    pub pruned_through: i64,
}

/// The event log, oldest first, a page at a time.
#[utoipa::path(get, operation_id = "list_events", path = "/v1/events", params(EventQuery), responses(
    (status = 200, body = EventPage),
    Unprocessable,
))]
pub(crate) async fn list(
    State(ctx): State<Ctx>,
    q: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EventPage>, ApiError> {
    let Query(q) = q?;
    let filter = q.filter(None)?;
    let events = ctx.store.events(&filter).await?;
    let kept = ctx.store.events_retained().await?;
    Ok(Json(EventPage {
        next: events.last().map_or(filter.after, |e| e.seq),
        events,
        oldest_seq: kept.oldest.as_ref().map(|o| o.0),
        oldest_time: kept.oldest.map(|o| o.1),
        pruned_through: kept.pruned_through,
    }))
}

/// How long a follower waits for a wake-up before it reads the store anyway.
const FALLBACK_POLL: Duration = Duration::from_secs(2);

/// The event log as server-sent events: the events after the cursor, then each new
/// one as it is written. Every message has `id: <seq>`, so a client reconnecting with
/// `Last-Event-ID` resumes exactly after the last one it saw.
#[utoipa::path(get, operation_id = "stream_events", path = "/v1/events/stream", params(EventQuery,
    ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this seq (wins over `after`)"),
), responses(
    (status = 200, content_type = "text/event-stream", body = Event, description = "One message per event (no `event:` name, so `onmessage` gets all): `data` the event as JSON, `id` its seq"),
    Unprocessable,
))]
pub(crate) async fn stream(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    q: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, std::convert::Infallible>>>, ApiError> {
    let Query(q) = q?;
    let last = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::InvalidRequest("Last-Event-ID is not a seq (a whole number)".into())
                })?,
        ),
        None => None,
    };
    let filter = q.filter(last)?;
    let state = Follow {
        wake: ctx.store.subscribe_events(),
        stopping: ctx.stopping.subscribe(),
        ctx,
        filter,
        buffer: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        let event = s.next().await?;
        let msg = SseEvent::default()
            .id(event.seq.to_string())
            .json_data(&event)
            .unwrap_or_else(|_| SseEvent::default().comment("unserialisable event"));
        Some((Ok(msg), s))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A follower's cursor; the store is the source, the wake-up only a hint.
struct Follow {
    ctx: Ctx,
    wake: tokio::sync::watch::Receiver<u64>,
    stopping: tokio::sync::watch::Receiver<bool>,
    filter: EventFilter,
    buffer: VecDeque<Event>,
}

impl Follow {
    /// The next event, waiting for it; `None` when the control plane stops (the
    /// client reconnects with `Last-Event-ID` to the next one).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if *self.stopping.borrow() {
                return None;
            }
            if let Some(e) = self.buffer.pop_front() {
                self.filter.after = e.seq;
                return Some(e);
            }
            // Mark seen before reading, so a commit after the read wakes us.
            self.wake.borrow_and_update();
            match self.ctx.store.events(&self.filter).await {
                Ok(page) if !page.is_empty() => {
                    self.buffer.extend(page);
                    continue;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "event stream cannot read the store; retrying"),
            }
            tokio::select! {
                _ = tokio::time::timeout(FALLBACK_POLL, self.wake.changed()) => {}
                _ = self.stopping.changed() => {}
            }
        }
    }
}

/// Writes an `api` event for every call that changed something (a method other
/// than GET or HEAD answered with success), after the answer's status is known.
/// The path without its query (names of instances, users, groups: no secret; a
/// password is only ever in a body or an answer, which are not looked at).
pub(crate) async fn record_api_call(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let token = req.extensions().get::<TokenName>().map(|t| t.0.clone());
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let changed = !matches!(method, Method::GET | Method::HEAD) && resp.status().is_success();
    let (Some(template), true) = (template, changed) else {
        return resp;
    };
    let instance = resp
        .extensions()
        .get::<EventSubject>()
        .map(|s| s.0.clone())
        .or_else(|| instance_in_path(&template, &path));
    let status = resp.status().as_u16();
    let who = token.as_deref().unwrap_or("unknown");
    let event = NewEvent {
        instance_id: None,
        instance_name: instance,
        kind: EventKind::Api,
        message: format!("{method} {path} answered {status} (token {who})"),
        details: serde_json::json!({
            "method": method.as_str(),
            "path": template,
            "target": path,
            "status": status,
            "token": who,
        }),
    };
    if let Err(e) = ctx.store.record_event(&event).await {
        warn!(error = %e, "could not record the API call in the event log");
    }
    resp
}

/// The instance name of a path under `/v1/instances/{name}`.
fn instance_in_path(template: &str, path: &str) -> Option<String> {
    if !template.starts_with("/v1/instances/{name}") {
        return None;
    }
    path.split('/').nth(3).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_an_age() {
        assert_eq!(
            parse_since("2026-01-02T03:04:05Z").expect("time"),
            "2026-01-02T03:04:05.000Z"
        );
        assert!(parse_since("10m").expect("age") < berth_store::event_now());
        assert!(matches!(
            parse_since("yesterday"),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse_since("2026-02-30T00:00:00Z"),
            Err(ApiError::Unprocessable(_))
        ));
        assert!(matches!(
            parse_since("ü2026-"),
            Err(ApiError::InvalidRequest(_))
        ));
    }

    #[test]
    fn the_instance_comes_from_its_path_only() {
        assert_eq!(
            instance_in_path("/v1/instances/{name}/{action}", "/v1/instances/db1/stop").as_deref(),
            Some("db1")
        );
        assert_eq!(
            instance_in_path("/v1/params/{group}", "/v1/params/web"),
            None
        );
    }
}
