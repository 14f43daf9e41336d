//! HTTP client for the control plane, configured from flags, environment
//! (`BERTH_URL`, `BERTH_TOKEN`) or the file `berth serve` wrote on first start.

use crate::{CliError, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The CLI's configuration file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClientConfig {
    /// Control plane URL.
    pub url: Option<String>,
    /// API token.
    pub token: Option<String>,
}

/// Where `berth serve` writes, and the CLI reads, its configuration by default.
pub fn default_config_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("berth").join("config.json"))
}

/// A configured client.
pub struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
    config_dir: Option<PathBuf>,
}

impl Client {
    /// Resolves URL and token: explicit values (flags or environment) win over the file.
    pub fn new(
        url: Option<String>,
        token: Option<String>,
        config_path: Option<PathBuf>,
    ) -> Result<Self> {
        let config_path = config_path.or_else(default_config_path);
        let config_dir = config_path
            .as_ref()
            .and_then(|p| p.parent().map(|d| d.to_owned()));
        let file: ClientConfig = config_path
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let url = url
            .or(file.url)
            .unwrap_or_else(|| "http://127.0.0.1:7070".to_owned())
            .trim_end_matches('/')
            .to_owned();
        let token = token.or(file.token).ok_or_else(|| {
            CliError::Config(
                "no API token: run `berth serve` once (it writes the CLI config), or set BERTH_TOKEN".into(),
            )
        })?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .map_err(|e| CliError::Other(e.to_string()))?;
        Ok(Self {
            http,
            url,
            token,
            config_dir,
        })
    }

    /// The directory of the CLI's configuration file (where it keeps its copy of the
    /// CA certificate).
    pub fn config_dir(&self) -> Option<&std::path::Path> {
        self.config_dir.as_deref()
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let bytes = self.send_raw(req).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| CliError::Other(format!("unexpected answer from the API: {e}")))
    }

    /// Sends a request; the body of a success, or the problem as an error.
    async fn send_raw(&self, req: reqwest::RequestBuilder) -> Result<Vec<u8>> {
        let resp =
            req.bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| CliError::Unreachable {
                    url: self.url.clone(),
                    reason: e.without_url().to_string(),
                })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| CliError::Unreachable {
            url: self.url.clone(),
            reason: e.without_url().to_string(),
        })?;
        if !status.is_success() {
            let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(CliError::Api {
                status: status.as_u16(),
                kind: problem["type"].as_str().unwrap_or("").to_owned(),
                detail: problem["detail"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("the API answered {status}")),
            });
        }
        Ok(bytes.to_vec())
    }

    /// PUT JSON.
    pub async fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T> {
        self.send(self.http.put(format!("{}{path}", self.url)).json(body))
            .await
    }

    /// PATCH JSON.
    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T> {
        self.send(self.http.patch(format!("{}{path}", self.url)).json(body))
            .await
    }

    /// DELETE that answers with no body.
    pub async fn delete_empty(&self, path: &str) -> Result<()> {
        self.send_raw(self.http.delete(format!("{}{path}", self.url)))
            .await
            .map(drop)
    }

    /// Opens a long-lived GET (server-sent events): no overall timeout, only one for
    /// connecting; `last_event_id` resumes after that event.
    pub async fn open_stream(
        &self,
        path: &str,
        last_event_id: Option<i64>,
    ) -> Result<reqwest::Response> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| CliError::Other(e.to_string()))?;
        let mut req = http
            .get(format!("{}{path}", self.url))
            .header("accept", "text/event-stream")
            .bearer_auth(&self.token);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.map_err(|e| CliError::Unreachable {
            url: self.url.clone(),
            reason: e.without_url().to_string(),
        })?;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = resp.bytes().await.unwrap_or_default();
            let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(CliError::Api {
                status: status.as_u16(),
                kind: problem["type"].as_str().unwrap_or("").to_owned(),
                detail: problem["detail"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("the API answered {status}")),
            });
        }
        Ok(resp)
    }

    /// The control plane's URL (for messages).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// GET a path under the API URL.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    /// POST JSON.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T> {
        self.send(self.http.post(format!("{}{path}", self.url)).json(body))
            .await
    }

    /// DELETE.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.delete(format!("{}{path}", self.url)))
            .await
    }
}
