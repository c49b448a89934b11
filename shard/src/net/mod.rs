//! The transport stack under the connection loop: socket, then (per
//! listener) TLS and WebSocket, then MQTT framing.

pub mod ws;
