//! The control socket: how `pminit status`, `reload`, `scale`, `ready` and
//! `prestop` (a second pminit process) talk to the running one.
//!
//! Where it lives: a stream socket in the abstract namespace, named
//! `pminit/control/<pid namespace inode>/<pid>`. Nothing is on disk, so a
//! read-only root filesystem is fine. Abstract names belong to the network
//! namespace, which `--network host` (or a Kubernetes pod's other
//! containers) shares, so the name alone is no fence: every connection's
//! peer is checked with `SO_PEERCRED`. A peer outside pminit's PID namespace
//! shows as pid 0 there and is refused outright; requests that change state
//! (reload, scale, prestop) come only from root or pminit's own uid.
//!
//! The protocol: one request per connection, one JSON object on one line
//! (`{"verb":"status"}`); replies are JSON lines too. A reload streams
//! `progress` lines and ends with `done`. A malformed or oversized request
//! gets an `error` reply; it never disturbs pminit.
//!
//! What a client can hold (limits in src/limits.rs): a peer outside the PID
//! namespace is answered with an error and closed at accept, before
//! anything is read, so it holds nothing. An insider gets `CONTROL_IDLE` to
//! send its request line and, once answered, as long to read the reply;
//! those deadlines feed the event loop's poll timeout. When
//! `CONTROL_MAX_CLIENTS` are connected, a new client evicts the oldest
//! silent one (no request yet) of the peer process that holds the most
//! silent connections, so a `ready` or `status` probe always gets in and
//! one process cannot push out another's probe. accept(2) failing for lack of a resource (EMFILE, ENFILE,
//! ENOBUFS, ENOMEM) takes the listening socket out of the poll set for a
//! back-off (100 ms doubling to 1 s) and is logged rate-limited, never spun on.
//!
//! Files: `protocol.rs` (the wire types, authorisation, the socket's name),
//! `server.rs` (pminit's side: accept, read, reply, limits), `client.rs`
//! (the verbs' command line and the second pminit that runs them).

mod client;
mod protocol;
mod server;

pub use client::client_main;
pub use protocol::*;
pub use server::{Outcome, Server};
