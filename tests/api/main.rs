//! The api's integration tests: one binary, one fresh database per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod agent;
mod auth;
mod cross_tenant;
mod desktop;
mod desktop_browser;
mod gateway_cluster;
mod gateway_data;
mod gateway_recording;
mod gateway_sip;
mod gateway_webrtc;
mod gateway_ws;
mod input;
mod platform;
mod recordings;
mod rls;
mod s3_server;
mod seats;
mod ws_client;
