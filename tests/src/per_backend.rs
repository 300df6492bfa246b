//! One test per backend: [`per_backend!`](crate::per_backend) turns an
//! `async fn(TestApp)` into `<name>::sqlite` and `<name>::postgres`, so a
//! failure on one backend is its own test.

/// The PostgreSQL URL tests run against, when one is configured.
pub fn postgres_url() -> Option<String> {
    std::env::var(payhost::store::testing::POSTGRES_URL_ENV)
        .ok()
        .filter(|u| !u.is_empty())
}

/// `per_backend!(name, body)`: a module `name` with tests `sqlite` and
/// `postgres`, each starting a [`TestApp`](crate::TestApp) on a fresh
/// database of its backend, running `body(app)`, then finishing the app.
/// The PostgreSQL test passes without running `body` when no PostgreSQL is
/// configured (and says so on stderr).
#[macro_export]
macro_rules! per_backend {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let db = payhost::store::testing::TestDb::sqlite()
                    .await
                    .expect("a SQLite test database");
                let app = $crate::TestApp::spawn(db).await;
                super::$body(&app).await;
                app.finish().await;
            }

            #[tokio::test]
            async fn postgres() {
                let Some(url) = $crate::per_backend::postgres_url() else {
                    eprintln!("no PostgreSQL configured; skipped");
                    return;
                };
                let db = payhost::store::testing::TestDb::postgres(&url)
                    .await
                    .expect("a PostgreSQL test database");
                let app = $crate::TestApp::spawn(db).await;
                super::$body(&app).await;
                app.finish().await;
            }
        }
    };
}
