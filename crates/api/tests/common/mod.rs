//! An API server started in-process on loopback for one test, on a fresh
//! in-memory store.
#![allow(dead_code)]

use meta169_api::{admin, metadata_handler, server, ApiSettings, MetadataService, ServerLimits};
use meta169_store::{SqliteStore, Store};
use meta169_tree::{example_instance, Instance};
use std::sync::Arc;

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const SECRET: &[u8] = b"s3cret";

pub struct TestApi {
    pub base: String,
    pub admin: String,
    pub service: Arc<MetadataService>,
    pub http: reqwest::Client,
}

impl TestApi {
    pub async fn start(settings: ApiSettings, limits: ServerLimits) -> TestApi {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let service = Arc::new(MetadataService::new(store, settings, limits.clone()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(server::serve_direct(
            listener,
            metadata_handler(service.clone()),
            limits.clone(),
            std::future::pending(),
        ));
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = format!("http://{}", admin_listener.local_addr().unwrap());
        tokio::spawn(server::serve(
            admin_listener,
            admin::router(service.clone(), ADMIN_TOKEN.into()),
            limits,
            std::future::pending(),
        ));
        TestApi {
            base,
            admin,
            service,
            http: reqwest::Client::new(),
        }
    }

    /// Standalone mode: callers identified by their loopback address.
    pub async fn standalone() -> TestApi {
        let mut settings = ApiSettings::default();
        settings.identity.by_source = true;
        settings.identity.signed = false;
        settings.identity.by_address = false;
        settings.identity.shared_secret = SECRET.to_vec();
        let api = TestApi::start(settings, ServerLimits::default()).await;
        api.add(&example_instance()).await;
        api
    }

    pub async fn add(&self, instance: &Instance) {
        let r = self
            .http
            .put(format!("{}/v1/instances/{}", self.admin, instance.uuid))
            .bearer_auth(ADMIN_TOKEN)
            .json(instance)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn ok(&self, path: &str) -> String {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}
