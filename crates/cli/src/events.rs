//! `berth events [NAME] [--since 10m] [--follow]`: the event log, as a table or
//! JSON; following reads server-sent events and reconnects with `Last-Event-ID`,
//! so nothing is missed or shown twice across a dropped connection.

use crate::{CliError, Client, Format, Result};
use berth_model::Event;
use serde::Deserialize;
use std::io::Write;
use std::time::Duration;

/// What to show.
#[derive(Clone, Debug, Default)]
pub struct EventsArgs {
    /// Only this instance's events.
    pub instance: Option<String>,
    /// Only events since this time (RFC 3339) or age (`10m`).
    pub since: Option<String>,
    /// Keep printing new events as they happen.
    pub follow: bool,
}

#[derive(Deserialize)]
struct Page {
    events: Vec<Event>,
    next: i64,
}

/// Percent-encodes a query value (names and ages need none, RFC 3339 has `+`).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(args: &EventsArgs) -> String {
    let mut q = vec![];
    if let Some(i) = &args.instance {
        q.push(format!("instance={}", encode(i)));
    }
    if let Some(s) = &args.since {
        q.push(format!("since={}", encode(s)));
    }
    q.join("&")
}

/// Runs `berth events`.
pub async fn events(client: &Client, args: &EventsArgs, fmt: Format) -> Result<()> {
    if args.follow {
        return follow(client, args, fmt).await;
    }
    let base = query(args);
    let mut all = vec![];
    let mut after = 0;
    // Bounded: a page is up to 1000 events; stop at an empty page.
    for _ in 0..10_000 {
        let sep = if base.is_empty() { "" } else { "&" };
        let page: Page = client
            .get(&format!("/v1/events?{base}{sep}after={after}&limit=1000"))
            .await?;
        if page.events.is_empty() {
            break;
        }
        after = page.next;
        all.extend(page.events);
    }
    match fmt {
        Format::Json => {
            println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        }
        Format::Table => {
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::NOTHING);
            t.set_header(["TIME", "INSTANCE", "KIND", "MESSAGE"]);
            for e in &all {
                t.add_row(row(e));
            }
            println!("{t}");
        }
    }
    Ok(())
}

fn row(e: &Event) -> [String; 4] {
    [
        e.time.clone(),
        e.instance.clone().unwrap_or_else(|| "-".into()),
        e.kind.to_string(),
        e.message.clone(),
    ]
}

fn print_one(e: &Event, fmt: Format) {
    let line = match fmt {
        Format::Json => serde_json::to_string(e).unwrap_or_default(),
        Format::Table => row(e).join("  "),
    };
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) ends following quietly.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Streams events until interrupted, reconnecting after the last one seen.
async fn follow(client: &Client, args: &EventsArgs, fmt: Format) -> Result<()> {
    let path = format!("/v1/events/stream?{}", query(args));
    let mut last: Option<i64> = None;
    let mut failures = 0u32;
    loop {
        let resp = match client.open_stream(&path, last).await {
            Ok(r) => r,
            // The control plane restarting: wait and resume; a refusal is final.
            Err(CliError::Unreachable { .. }) if failures < 30 => {
                failures += 1;
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        failures = 0;
        let mut parser = SseParser::default();
        let mut resp = resp;
        while let Ok(Some(chunk)) = resp.chunk().await {
            for msg in parser.push(&chunk) {
                let Ok(e) = serde_json::from_str::<Event>(&msg.data) else {
                    continue;
                };
                if last.is_some_and(|l| e.seq <= l) {
                    continue;
                }
                last = Some(e.seq);
                print_one(&e, fmt);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One server-sent message (only what Berth sends: `id` and `data`).
#[derive(Debug, Default, PartialEq, Eq)]
struct SseMessage {
    id: Option<String>,
    data: String,
}

/// Splits a byte stream into server-sent messages (a blank line ends one).
#[derive(Default)]
struct SseParser {
    pending: Vec<u8>,
    current: SseMessage,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        self.pending.extend_from_slice(bytes);
        let mut out = vec![];
        while let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.current.data.is_empty() {
                    out.push(std::mem::take(&mut self.current));
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.current.id = Some(value.to_owned()),
                "data" => {
                    if !self.current.data.is_empty() {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_split_at_blank_lines_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\n\nevent: api\nid: 7\nda").is_empty());
        let got = p.push(b"ta: {\"a\":1}\n\nid: 8\ndata: x\n\n");
        assert_eq!(
            got,
            [
                SseMessage {
                    id: Some("7".into()),
                    data: "{\"a\":1}".into()
                },
                SseMessage {
                    id: Some("8".into()),
                    data: "x".into()
                },
            ]
        );
    }

    #[test]
    fn query_values_are_encoded() {
        let q = query(&EventsArgs {
            instance: Some("db1".into()),
            since: Some("2026-01-01T00:00:00+01:00".into()),
            follow: false,
        });
        assert_eq!(q, "instance=db1&since=2026-01-01T00%3A00%3A00%2B01%3A00");
    }
}
