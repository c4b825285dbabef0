//! The client's end of the control socket.

use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::protocol::{Request, Response};

/// How long a request may take (dials and pings have shorter timeouts of their own).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to the daemon.
pub(crate) struct Client {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Client {
    /// Connects to the daemon using `data_dir`; says plainly when none runs.
    pub(crate) async fn connect(data_dir: &Path) -> Result<Client> {
        let path = super::socket_path(data_dir);
        let stream = match UnixStream::connect(&path).await {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                bail!(
                    "no p2pnet daemon is running (no socket at {})",
                    path.display()
                )
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                bail!(
                    "no p2pnet daemon is running (stale socket at {})",
                    path.display()
                )
            }
            Err(e) => {
                return Err(e).with_context(|| format!("connecting to {}", path.display()));
            }
        };
        let (rd, wr) = stream.into_split();
        Ok(Client {
            rd: BufReader::new(rd),
            wr,
        })
    }

    /// Sends `request` and returns its result, or the daemon's error.
    pub(crate) async fn call(&mut self, request: &Request) -> Result<Value> {
        self.send(request).await?;
        match tokio::time::timeout(REQUEST_TIMEOUT, self.next()).await {
            Ok(r) => r?.ok_or_else(|| anyhow!("the daemon closed the connection")),
            Err(_) => bail!("no answer from the daemon within {REQUEST_TIMEOUT:?}"),
        }
    }

    /// Sends `request` without waiting for the answer.
    pub(crate) async fn send(&mut self, request: &Request) -> Result<()> {
        let mut line = serde_json::to_string(request)?;
        line.push('\n');
        self.wr
            .write_all(line.as_bytes())
            .await
            .context("writing to the daemon")
    }

    /// The next response's result (an error response is an error); `None` at the end.
    pub(crate) async fn next(&mut self) -> Result<Option<Value>> {
        let mut line = String::new();
        if self
            .rd
            .read_line(&mut line)
            .await
            .context("reading from the daemon")?
            == 0
        {
            return Ok(None);
        }
        let response: Response =
            serde_json::from_str(&line).context("the daemon's answer is not valid JSON")?;
        match (response.ok, response.result, response.error) {
            (true, result, _) => Ok(Some(result.unwrap_or(Value::Null))),
            (false, _, error) => Err(anyhow!(error.unwrap_or_else(|| "unknown error".into()))),
        }
    }
}
