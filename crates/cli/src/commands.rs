//! The client subcommands: each builds a control request, sends it to the daemon and shows the
//! result.

use std::path::Path;

use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

use crate::control::client::Client;
use crate::control::protocol::Request;
use crate::output::{
    self, DHT_TABLE_COLUMNS, LISTENER_COLUMNS, PEER_COLUMNS, STREAM_COLUMNS, field,
};

/// Commands sent to a running daemon. PEER is a peer id or a multiaddr ending in `/p2p/<id>`.
#[derive(Subcommand)]
pub(crate) enum ClientCommand {
    /// This node's peer id and listen addresses.
    Id,
    /// Connected peers.
    Peers,
    /// Dial a peer at ADDR (e.g. /ip4/192.0.2.7/tcp/4001/p2p/12D3…).
    Connect { addr: String },
    /// Close every connection to PEER.
    Disconnect { peer: String },
    /// Measure the round-trip time to PEER.
    Ping { peer: String },
    /// Accept TCP connections on LISTEN_ADDR and tunnel each to PEER's PROTO listener.
    Forward {
        /// The protocol (e.g. /x/ssh).
        proto: String,
        /// Local address to accept on (e.g. /ip4/127.0.0.1/tcp/2222).
        listen_addr: String,
        peer: String,
        /// Save the tunnel in the daemon's configuration file.
        #[arg(long)]
        persist: bool,
    },
    /// Bridge streams peers open on PROTO to TARGET_ADDR (e.g. /ip4/127.0.0.1/tcp/22).
    Listen {
        proto: String,
        target_addr: String,
        /// Write `<peer id>\n` to the target before any data.
        #[arg(long)]
        report_peer_id: bool,
        /// Only this peer may use the tunnel (repeatable).
        #[arg(long = "allow", value_name = "PEER")]
        allow: Vec<String>,
        /// Save the tunnel in the daemon's configuration file.
        #[arg(long)]
        persist: bool,
    },
    /// The forwarding listeners.
    Ls,
    /// The forwarded streams.
    Streams,
    /// Close forwarding listeners (streams already open go on).
    #[command(group(clap::ArgGroup::new("which").required(true).multiple(true)))]
    Close {
        /// Every listener.
        #[arg(long, group = "which", conflicts_with_all = ["protocol", "listen", "target"])]
        all: bool,
        /// Listeners of this protocol.
        #[arg(long, group = "which", value_name = "P")]
        protocol: Option<String>,
        /// The listener on this address.
        #[arg(long, group = "which", value_name = "A")]
        listen: Option<String>,
        /// Listeners sending to this address.
        #[arg(long, group = "which", value_name = "A")]
        target: Option<String>,
    },
    /// Reset one forwarded stream (ID as `streams` shows it, e.g. s3).
    StreamClose { id: String },
    /// Send a message of KIND to PEER.
    Send {
        peer: String,
        kind: String,
        data: String,
    },
    /// Send a message of KIND to every peer with a message session.
    Broadcast { kind: String, data: String },
    /// Print messages of KIND as they arrive, until interrupted.
    Subscribe { kind: String },
    /// Every component's metrics (Prometheus text format).
    Metrics,
    /// The Kademlia DHT. KEY is UTF-8 text whose bytes are the record key, so any libp2p tool
    /// addresses the same record.
    #[command(subcommand)]
    Dht(DhtCommand),
}

/// `p2pnet dht …`.
#[derive(Subcommand)]
pub(crate) enum DhtCommand {
    /// Find PEER's addresses (peer id) through the DHT.
    FindPeer { peer: String },
    /// Get the value stored under KEY.
    Get { key: String },
    /// Store VALUE under KEY at the peers closest to it.
    Put { key: String, value: String },
    /// Announce this node as a provider of KEY.
    Provide { key: String },
    /// Find the providers of KEY.
    Providers { key: String },
    /// The routing table.
    Table,
}

impl ClientCommand {
    fn request(self) -> Request {
        match self {
            Self::Id => Request::Id,
            Self::Peers => Request::Peers,
            Self::Connect { addr } => Request::Connect { addr },
            Self::Disconnect { peer } => Request::Disconnect { peer },
            Self::Ping { peer } => Request::Ping { peer },
            Self::Forward {
                proto,
                listen_addr,
                peer,
                persist,
            } => Request::Forward {
                protocol: proto,
                listen_addr,
                peer,
                persist,
            },
            Self::Listen {
                proto,
                target_addr,
                report_peer_id,
                allow,
                persist,
            } => Request::Listen {
                protocol: proto,
                target_addr,
                report_peer_id,
                allow,
                persist,
            },
            Self::Ls => Request::Ls,
            Self::Streams => Request::Streams,
            Self::Close {
                all,
                protocol,
                listen,
                target,
            } => Request::Close {
                all,
                protocol,
                listen_addr: listen,
                target_addr: target,
            },
            Self::StreamClose { id } => Request::StreamClose { id },
            Self::Send { peer, kind, data } => Request::Send { peer, kind, data },
            Self::Broadcast { kind, data } => Request::Broadcast { kind, data },
            Self::Subscribe { kind } => Request::Subscribe { kind },
            Self::Metrics => Request::Metrics,
            Self::Dht(d) => match d {
                DhtCommand::FindPeer { peer } => Request::DhtFindPeer { peer },
                DhtCommand::Get { key } => Request::DhtGet { key },
                DhtCommand::Put { key, value } => Request::DhtPut { key, value },
                DhtCommand::Provide { key } => Request::DhtProvide { key },
                DhtCommand::Providers { key } => Request::DhtProviders { key },
                DhtCommand::Table => Request::DhtTable,
            },
        }
    }
}

/// Runs a client command against the daemon using `data_dir`.
pub(crate) async fn run(data_dir: &Path, command: ClientCommand, json: bool) -> Result<()> {
    let mut client = Client::connect(data_dir).await?;
    let request = command.request();
    if let Request::Subscribe { .. } = request {
        return subscribe(client, &request, json).await;
    }
    let result = client.call(&request).await?;
    if json {
        println!("{result}");
    } else {
        print!("{}", human(&request, &result));
    }
    Ok(())
}

async fn subscribe(mut client: Client, request: &Request, json: bool) -> Result<()> {
    client.send(request).await?;
    // The first answer says the subscription is in place (or why not).
    client.next().await?;
    if let Request::Subscribe { kind } = request {
        eprintln!("subscribed to {kind}; Ctrl-C to stop");
    }
    loop {
        let message = tokio::select! {
            m = client.next() => m?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(m) = message else {
            anyhow::bail!("the daemon closed the subscription");
        };
        if json {
            println!("{m}");
        } else {
            println!(
                "{} {}: {}",
                field(&m, "peer"),
                field(&m, "kind"),
                field(&m, "data")
            );
        }
    }
}

/// The result for people.
fn human(request: &Request, r: &Value) -> String {
    match request {
        Request::Id => {
            let mut out = format!("peer id: {}\n", field(r, "peer_id"));
            for a in r["listen_addrs"].as_array().into_iter().flatten() {
                out.push_str(&format!("listening: {}\n", a.as_str().unwrap_or_default()));
            }
            out
        }
        Request::Peers | Request::Ls | Request::Streams if empty(r) => match request {
            Request::Peers => "no peers\n".into(),
            Request::Ls => "no listeners\n".into(),
            _ => "no streams\n".into(),
        },
        Request::Peers => output::object_table(r, PEER_COLUMNS),
        Request::Ls => output::object_table(r, LISTENER_COLUMNS),
        Request::Streams => output::object_table(r, STREAM_COLUMNS),
        Request::Connect { .. } => format!("connected to {}\n", field(r, "peer_id")),
        Request::Disconnect { .. } => format!(
            "disconnected {} (connections closed: {})\n",
            field(r, "peer_id"),
            field(r, "connections_closed")
        ),
        Request::Ping { .. } => format!(
            "pong from {} in {:.2} ms\n",
            field(r, "peer_id"),
            r["rtt_ms"].as_f64().unwrap_or_default()
        ),
        Request::Forward { .. } | Request::Listen { .. } => {
            let mut out = output::object_table(&Value::Array(vec![r.clone()]), LISTENER_COLUMNS);
            if r.get("persisted").is_some() {
                out.push_str(&format!("saved to {}\n", field(r, "persisted")));
            }
            out
        }
        Request::Close { .. } => format!("closed {} listener(s)\n", field(r, "closed")),
        Request::StreamClose { .. } => format!("closed {}\n", field(r, "closed")),
        Request::Send { .. } => format!("sent to {}\n", field(r, "peer_id")),
        Request::Broadcast { .. } => {
            let reached = r["reached"].as_array().map_or(0, Vec::len);
            let mut out = format!("sent to {reached} peer(s)\n");
            for f in r["failed"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "not sent to {}: {}\n",
                    field(f, "peer_id"),
                    field(f, "error")
                ));
            }
            out
        }
        Request::Metrics => field(r, "text"),
        Request::Subscribe { .. } => String::new(),
        Request::DhtFindPeer { .. } => {
            let mut out = format!(
                "found {} in {} hop(s)\n",
                field(r, "peer_id"),
                field(r, "hops")
            );
            for a in r["addrs"].as_array().into_iter().flatten() {
                out.push_str(&format!("address: {}\n", a.as_str().unwrap_or_default()));
            }
            out
        }
        Request::DhtGet { .. } => {
            let mut out = String::new();
            for rec in r["records"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{} (from {})\n",
                    field(rec, "value"),
                    field(rec, "peer_id")
                ));
            }
            out
        }
        Request::DhtPut { .. } | Request::DhtProvide { .. } => format!(
            "stored at {} peer(s), {} failed\n",
            r["stored_at"].as_array().map_or(0, Vec::len),
            r["failed"].as_array().map_or(0, Vec::len)
        ),
        Request::DhtProviders { .. } => {
            let list = r["providers"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                return "no providers\n".into();
            }
            let mut out = String::new();
            for p in list {
                out.push_str(&format!("{}\n", field(&p, "peer_id")));
            }
            out
        }
        Request::DhtTable if empty(r) => "the routing table is empty\n".into(),
        Request::DhtTable => output::object_table(r, DHT_TABLE_COLUMNS),
    }
}

fn empty(r: &Value) -> bool {
    r.as_array().is_some_and(Vec::is_empty)
}
