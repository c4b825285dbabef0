//! The library half of the `p2pnet` command: the control protocol its daemon speaks on the
//! Unix socket `<data-dir>/p2pnet.sock`, for programs that drive a daemon without the CLI.
//!
//! ```no_run
//! use std::io::{BufRead, BufReader, Write};
//! use std::os::unix::net::UnixStream;
//!
//! use p2pnet_cli::protocol::{Request, Response};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut socket = UnixStream::connect("/home/me/.local/share/p2pnet/p2pnet.sock")?;
//! let mut line = serde_json::to_string(&Request::Id)?;
//! line.push('\n');
//! socket.write_all(line.as_bytes())?;
//! let mut answer = String::new();
//! BufReader::new(socket).read_line(&mut answer)?;
//! let response: Response = serde_json::from_str(&answer)?;
//! assert!(response.ok);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod protocol;
