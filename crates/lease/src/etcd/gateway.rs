//! The few calls of etcd's v3 JSON gateway the lease store makes. Keys and values
//! travel base64-encoded and 64-bit numbers as strings (the gateway's protobuf JSON
//! mapping); `/v3/...` is the path from etcd 3.4 on (Debian bookworm's etcd-server).

use super::url::EtcdEndpoint;
use crate::{LeaseError, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// An HTTP client over the members' gateways. A request goes to the member that
/// answered last; only when it cannot be connected to at all is the next tried (a
/// request that was sent is never repeated elsewhere: it may have been applied).
pub(super) struct Gateway {
    http: reqwest::Client,
    endpoints: Vec<EtcdEndpoint>,
    current: AtomicUsize,
    timeout: Duration,
}

/// One key as the gateway reports it (fields etcd leaves at zero are absent).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct KeyValue {
    #[serde(deserialize_with = "bytes")]
    pub value: Vec<u8>,
    #[serde(deserialize_with = "int")]
    pub mod_revision: i64,
    #[serde(deserialize_with = "int")]
    pub lease: i64,
}

/// A granted etcd lease.
pub(super) struct Granted {
    pub id: i64,
    pub ttl_secs: i64,
}

/// A condition of a transaction.
pub(super) enum Compare<'a> {
    /// The key does not exist.
    Absent(&'a str),
    /// The key was last written at this revision (0: it does not exist).
    ModRevision(&'a str, i64),
}

/// A write of a transaction: `key = value`, attached to an etcd lease or not (0).
pub(super) struct Put<'a> {
    pub key: &'a str,
    pub value: &'a [u8],
    pub lease: i64,
}

impl Gateway {
    pub fn new(endpoints: Vec<EtcdEndpoint>, timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .no_proxy()
            .tls_certs_only(Vec::new())
            .build()
            .map_err(|e| LeaseError::Client(e.without_url().to_string()))?;
        Ok(Self {
            http,
            endpoints,
            current: AtomicUsize::new(0),
            timeout,
        })
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The key, when it exists.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Range {
            kvs: Vec<KeyValue>,
        }
        let range: Range = self
            .call("/v3/kv/range", &json!({ "key": BASE64.encode(key) }))
            .await?;
        Ok(range.kvs.into_iter().next())
    }

    /// Whether the comparisons held (and so the puts were made), in one revision.
    pub async fn txn(&self, compare: &[Compare<'_>], success: &[Put<'_>]) -> Result<bool> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Txn {
            succeeded: bool,
        }
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| match c {
                Compare::Absent(key) => json!({
                    "key": BASE64.encode(key), "target": "CREATE",
                    "result": "EQUAL", "create_revision": "0",
                }),
                Compare::ModRevision(key, revision) => json!({
                    "key": BASE64.encode(key), "target": "MOD",
                    "result": "EQUAL", "mod_revision": revision.to_string(),
                }),
            })
            .collect();
        let success: Vec<Value> = success
            .iter()
            .map(|put| {
                json!({ "request_put": {
                    "key": BASE64.encode(put.key),
                    "value": BASE64.encode(put.value),
                    "lease": put.lease.to_string(),
                }})
            })
            .collect();
        let txn: Txn = self
            .call(
                "/v3/kv/txn",
                &json!({ "compare": compare, "success": success }),
            )
            .await?;
        Ok(txn.succeeded)
    }

    /// A new etcd lease of at least `ttl_secs` (etcd may grant more: its minimum).
    pub async fn grant(&self, ttl_secs: i64) -> Result<Granted> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Grant {
            #[serde(rename = "ID", deserialize_with = "int")]
            id: i64,
            #[serde(rename = "TTL", deserialize_with = "int")]
            ttl: i64,
            error: String,
        }
        let path = "/v3/lease/grant";
        let grant: Grant = self
            .call(path, &json!({ "TTL": ttl_secs.to_string() }))
            .await?;
        if !grant.error.is_empty() || grant.id == 0 || grant.ttl <= 0 {
            return Err(LeaseError::Protocol {
                what: path.into(),
                reason: format!("no lease granted: {:?}", grant.error),
            });
        }
        Ok(Granted {
            id: grant.id,
            ttl_secs: grant.ttl,
        })
    }

    /// Refreshes the etcd lease to its granted TTL; that TTL, or 0 when the lease is
    /// gone (expired or revoked).
    pub async fn keep_alive(&self, lease: i64) -> Result<i64> {
        // A stream in gRPC: the gateway answers each message as a line
        // `{"result": …}`, and ends when the request body does.
        #[derive(Deserialize)]
        struct Line {
            result: Option<KeepAlive>,
            error: Option<Value>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct KeepAlive {
            #[serde(rename = "TTL", deserialize_with = "int")]
            ttl: i64,
        }
        let path = "/v3/lease/keepalive";
        let (endpoint, text) = self.post(path, &json!({ "ID": lease.to_string() })).await?;
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let line: Line = parse(path, first)?;
        match (line.result, line.error) {
            (_, Some(error)) => Err(LeaseError::Etcd {
                endpoint,
                path,
                message: error_message(&error),
            }),
            (Some(alive), None) => Ok(alive.ttl.max(0)),
            (None, None) => Ok(0),
        }
    }

    /// Whole seconds the etcd lease has left, rounded down (so 0 is less than a
    /// second); `None` when it is gone (etcd answers -1).
    pub async fn time_to_live(&self, lease: i64) -> Result<Option<i64>> {
        // A zero is left out of the answer, as the gateway does with every zero.
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct TimeToLive {
            #[serde(rename = "TTL", deserialize_with = "int")]
            ttl: i64,
        }
        let answer: TimeToLive = self
            .call("/v3/lease/timetolive", &json!({ "ID": lease.to_string() }))
            .await?;
        Ok((answer.ttl >= 0).then_some(answer.ttl))
    }

    /// Ends the etcd lease and deletes its keys; `false` when it was already gone.
    pub async fn revoke(&self, lease: i64) -> Result<bool> {
        match self
            .call::<Value>("/v3/lease/revoke", &json!({ "ID": lease.to_string() }))
            .await
        {
            Ok(_) => Ok(true),
            Err(LeaseError::Etcd { message, .. }) if message.contains("lease not found") => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn call<T: DeserializeOwned>(&self, path: &'static str, body: &Value) -> Result<T> {
        let (_, text) = self.post(path, body).await?;
        parse(path, &text)
    }

    /// Posts `body`; the endpoint that answered and its 2xx answer's text.
    async fn post(&self, path: &'static str, body: &Value) -> Result<(String, String)> {
        let n = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let index = (start + i) % n;
            let endpoint = self.endpoints[index].base_url();
            let sent = self
                .http
                .post(format!("{endpoint}{path}"))
                .timeout(self.timeout)
                .json(body)
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(e) => {
                    let connect = e.is_connect();
                    let reason = if e.is_timeout() {
                        format!("no answer within {:?}", self.timeout)
                    } else {
                        e.without_url().to_string()
                    };
                    let unreachable = LeaseError::Unreachable {
                        endpoint,
                        path,
                        reason,
                    };
                    if connect {
                        last = Some(unreachable);
                        continue;
                    }
                    return Err(unreachable);
                }
            };
            self.current.store(index, Ordering::Relaxed);
            let status = response.status();
            let text = response.text().await.map_err(|e| LeaseError::Unreachable {
                endpoint: endpoint.clone(),
                path,
                reason: e.without_url().to_string(),
            })?;
            if !status.is_success() {
                let message = serde_json::from_str::<Value>(&text)
                    .map(|v| error_message(&v))
                    .unwrap_or_else(|_| format!("HTTP {status}"));
                return Err(LeaseError::Etcd {
                    endpoint,
                    path,
                    message,
                });
            }
            return Ok((endpoint, text));
        }
        Err(last.unwrap_or(LeaseError::Unreachable {
            endpoint: String::new(),
            path,
            reason: "no endpoint configured".into(),
        }))
    }
}

fn parse<T: DeserializeOwned>(path: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| LeaseError::Protocol {
        what: path.into(),
        reason: e.to_string(),
    })
}

/// etcd's own words from an error answer: `{"error": "...", "message": "..."}` (or
/// the same nested in a stream line).
fn error_message(error: &Value) -> String {
    ["message", "error"]
        .iter()
        .find_map(|field| error.get(field).and_then(Value::as_str))
        .map(str::to_owned)
        .unwrap_or_else(|| "an error without a message".into())
}

/// A 64-bit integer as the gateway writes it: a string, or a number.
fn int<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Number(i64),
        Text(String),
    }
    match Int::deserialize(d)? {
        Int::Number(n) => Ok(n),
        Int::Text(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn bytes<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    BASE64.decode(text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_answer_is_read_with_string_numbers_and_base64() {
        #[derive(Deserialize)]
        struct Range {
            kvs: Vec<KeyValue>,
        }
        let text = r#"{"header":{"revision":"7"},"kvs":[{"key":"Zm9v","create_revision":"2",
            "mod_revision":"5","version":"1","value":"YmFy","lease":"694d77aa"}]}"#;
        assert!(
            parse::<Range>("/v3/kv/range", text).is_err(),
            "a lease id is decimal"
        );
        let text = text.replace("694d77aa", "7587869829744588801");
        let range: Range = parse("/v3/kv/range", &text).expect("valid");
        let kv = &range.kvs[0];
        assert_eq!(
            (kv.value.as_slice(), kv.mod_revision, kv.lease),
            (&b"bar"[..], 5, 7587869829744588801)
        );
    }

    #[test]
    fn absent_fields_are_zero() {
        let kv: KeyValue = parse("/v3/kv/range", r#"{"key":"Zm9v"}"#).expect("valid");
        assert_eq!((kv.value.len(), kv.mod_revision, kv.lease), (0, 0, 0));
    }

    #[test]
    fn etcd_s_error_text_is_kept() {
        let answer = json!({"error": "etcdserver: requested lease not found", "code": 5,
            "message": "etcdserver: requested lease not found"});
        assert_eq!(
            error_message(&answer),
            "etcdserver: requested lease not found"
        );
        assert_eq!(error_message(&json!({})), "an error without a message");
    }
}
