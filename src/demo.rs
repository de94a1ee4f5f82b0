//! The quickstart: a SQLite shop database with realistic (fake) personal data, the policies and
//! config that govern it, and an evidence key — all written into one directory.

use std::path::Path;

use chrono::{Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::Executor;

const FILES: &[(&str, &str)] = &[
    ("lapse.yaml", include_str!("../examples/demo/lapse.yaml")),
    ("holds.yaml", include_str!("../examples/demo/holds.yaml")),
    ("policies/customers.yaml", include_str!("../examples/demo/policies/customers.yaml")),
    ("policies/orders.yaml", include_str!("../examples/demo/policies/orders.yaml")),
    ("policies/support.yaml", include_str!("../examples/demo/policies/support.yaml")),
    ("policies/leads.yaml", include_str!("../examples/demo/policies/leads.yaml")),
    ("policies/exports.yaml", include_str!("../examples/demo/policies/exports.yaml")),
];

const FIRST: &[&str] = &[
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Amelia",
    "Oliver",
    "Ava",
    "Elijah",
    "Sophia",
    "Mateo",
    "Isabella",
    "Lucas",
    "Mia",
    "Levi",
    "Charlotte",
    "Aiko",
    "Chidi",
    "Fatima",
    "Jonas",
    "Ingrid",
    "Priya",
    "Kenji",
    "Zanele",
    "Tomasz",
    "Lucía",
    "Yusuf",
    "Maëlle",
];
const LAST: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "García",
    "Miller",
    "Davis",
    "Rodríguez",
    "Martínez",
    "Hernández",
    "Müller",
    "Nakamura",
    "Okafor",
    "Kowalski",
    "Haddad",
    "Johansson",
    "Patel",
    "Dubois",
    "Rossi",
    "Novak",
    "Silva",
    "O'Connor",
    "Nguyen",
];
const STREETS: &[&str] = &[
    "High Street",
    "Station Road",
    "Church Lane",
    "Mill Road",
    "Park Avenue",
    "Rue de la Paix",
    "Hauptstraße",
    "Calle Mayor",
];
const CITIES: &[&str] = &[
    "London SW1A 1AA",
    "Leeds LS1 4DY",
    "Paris 75002",
    "Berlin 10115",
    "Madrid 28013",
    "Dublin D02 X285",
    "Lyon 69002",
];
const DOMAINS: &[&str] = &["example.com", "mail.example.org", "example.net", "inbox.example"];

/// Sizes of the seeded tables.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub customers: u32,
    pub leads: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes { customers: 2000, leads: 800 }
    }
}

/// The file that says a directory is the demo's own: only such a directory (or an empty or
/// new one) is written into.
pub const MARKER: &str = ".lapse-demo";

/// Refuses a directory with anything in it that the demo did not make ([`setup`]).
pub fn refuse_foreign(dir: &Path) -> anyhow::Result<()> {
    let has_anything = std::fs::read_dir(dir).map(|mut e| e.next().is_some()).unwrap_or(false);
    if has_anything && !dir.join(MARKER).exists() && !dir.join("demo.db").exists() {
        anyhow::bail!(
            "{} is not empty and is not a directory `lapse demo` made: the demo replaces its files/ and lapse.yaml, then deletes data there; give a new or empty directory (--dir)",
            dir.display()
        );
    }
    Ok(())
}

/// Writes config, policies, holds and an evidence key into `dir`, and (re)creates `demo.db`
/// and `files/`. Refuses a directory with anything in it that the demo did not make (a marker,
/// or `demo.db` of an earlier demo): it replaces `files/` and `lapse.yaml` there, and then
/// runs (before, `--dir` of a directory of one's own wiped its `files/`; found by a review).
pub async fn setup(dir: &Path, sizes: Sizes, seed: u64) -> anyhow::Result<()> {
    refuse_foreign(dir)?;
    std::fs::create_dir_all(dir.join("policies"))?;
    std::fs::write(dir.join(MARKER), "made by `lapse demo`: it may rewrite this directory\n")?;
    for (name, text) in FILES {
        std::fs::write(dir.join(name), text)?;
    }
    let key_path = dir.join("evidence.key");
    if !key_path.exists() {
        let mut key = [0u8; 32];
        rand::thread_rng().fill(&mut key);
        std::fs::write(&key_path, hex::encode(key))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    let sig_path = dir.join("signing.key");
    if !sig_path.exists() {
        let signer = crate::integrity::Signer::generate();
        std::fs::write(&sig_path, signer.secret_hex())?;
        std::fs::write(dir.join("signing.pub"), signer.public_hex())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&sig_path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    let db = dir.join("demo.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    seed_sqlite(&db, sizes, seed).await?;
    seed_files(&dir.join("files"), sizes, seed)
}

/// Customer data exports on a "mounted volume": `exports/YYYY/MM/DD/customer-<id>.csv`.
pub fn seed_files(root: &Path, sizes: Sizes, seed: u64) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(root);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let today = Utc::now().date_naive();
    for _ in 0..(sizes.customers / 8).max(10) {
        let id = rng.gen_range(1..=sizes.customers);
        let day = today - Duration::days(rng.gen_range(0..400));
        let dir = root.join(day.format("exports/%Y/%m/%d").to_string());
        std::fs::create_dir_all(&dir)?;
        let first = FIRST[rng.gen_range(0..FIRST.len())];
        let last = LAST[rng.gen_range(0..LAST.len())];
        std::fs::write(
            dir.join(format!("customer-{id}.csv")),
            format!("id,full_name,email\n{id},{first} {last},{}.{}@example.com\n", first.to_lowercase(), id),
        )?;
    }
    Ok(())
}

/// Creates the shop schema in a new SQLite file and fills it.
pub async fn seed_sqlite(db: &Path, sizes: Sizes, seed: u64) -> anyhow::Result<()> {
    let opts = SqliteConnectOptions::new().filename(db).create_if_missing(true).foreign_keys(true);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?;
    pool.execute(SCHEMA).await?;
    let mut rng = StdRng::seed_from_u64(seed);
    let now = Utc::now();
    let ts = |d: chrono::DateTime<Utc>| d.format("%Y-%m-%d %H:%M:%S").to_string();
    let mut tx = pool.begin().await?;
    let mut order_id = 0u32;
    let mut item_id = 0u32;
    let mut ticket_id = 0u32;
    for id in 1..=sizes.customers {
        let first = FIRST[rng.gen_range(0..FIRST.len())];
        let last = LAST[rng.gen_range(0..LAST.len())];
        let email = format!(
            "{}.{}{}@{}",
            first.to_lowercase(),
            last.to_lowercase().replace(['\'', ' '], ""),
            id,
            DOMAINS[rng.gen_range(0..DOMAINS.len())]
        );
        let phone = format!("+44 7{:03} {:06}", rng.gen_range(100..999), rng.gen_range(0..999_999));
        let address = format!(
            "{} {}, {}",
            rng.gen_range(1..200),
            STREETS[rng.gen_range(0..STREETS.len())],
            CITIES[rng.gen_range(0..CITIES.len())]
        );
        let birth = format!("{}-{:02}-{:02}", rng.gen_range(1940..2006), rng.gen_range(1..13), rng.gen_range(1..29));
        let ip = if rng.gen_bool(0.8) {
            format!(
                "{}.{}.{}.{}",
                rng.gen_range(1..224),
                rng.gen_range(0..256),
                rng.gen_range(0..256),
                rng.gen_range(1..255)
            )
        } else {
            format!(
                "2001:db8:{:x}:{:x}::{:x}",
                rng.gen_range(0..0xffff),
                rng.gen_range(0..0xffff),
                rng.gen_range(1..0xffff)
            )
        };
        // Accounts from 0 to 9 years old; last order somewhere after sign-up.
        let created = now - Duration::days(rng.gen_range(1..9 * 365));
        let span = (now - created).num_days().max(1);
        let mut last_order = created + Duration::days(rng.gen_range(0..span));
        // Most customers are recent; a quarter went quiet more than 3 years ago.
        if rng.gen_bool(0.55) {
            last_order = now - Duration::days(rng.gen_range(0..span.clamp(1, 3 * 365)));
        }
        let last_order_v = if rng.gen_bool(0.03) { None } else { Some(ts(last_order.max(created))) };
        sqlx::query("INSERT INTO customers (id, email, full_name, phone, postal_address, birth_date, signup_ip, created_at, last_order_at) VALUES (?,?,?,?,?,?,?,?,?)")
            .bind(id as i64)
            .bind(&email)
            .bind(format!("{first} {last}"))
            .bind(&phone)
            .bind(&address)
            .bind(&birth)
            .bind(&ip)
            .bind(ts(created))
            .bind(&last_order_v)
            .execute(&mut *tx)
            .await?;
        let n_orders = rng.gen_range(0..4);
        for _ in 0..n_orders {
            order_id += 1;
            let placed = created + Duration::days(rng.gen_range(0..span));
            sqlx::query("INSERT INTO orders (id, customer_id, placed_at, total_cents, card_last4, shipping_address) VALUES (?,?,?,?,?,?)")
                .bind(order_id as i64)
                .bind(id as i64)
                .bind(ts(placed))
                .bind(rng.gen_range(500..50_000) as i64)
                .bind(format!("{:04}", rng.gen_range(0..10_000)))
                .bind(&address)
                .execute(&mut *tx)
                .await?;
            for _ in 0..rng.gen_range(1..4) {
                item_id += 1;
                sqlx::query("INSERT INTO order_items (id, order_id, sku, quantity) VALUES (?,?,?,?)")
                    .bind(item_id as i64)
                    .bind(order_id as i64)
                    .bind(format!("SKU-{:05}", rng.gen_range(0..99_999)))
                    .bind(rng.gen_range(1..5) as i64)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if rng.gen_bool(0.4) {
            ticket_id += 1;
            let opened = created + Duration::days(rng.gen_range(0..span));
            let closed = rng.gen_bool(0.85).then(|| opened + Duration::days(rng.gen_range(0..20)));
            let status = if closed.is_some() { "closed" } else { "open" };
            sqlx::query("INSERT INTO support_tickets (id, customer_id, requester_email, body, status, opened_at, closed_at) VALUES (?,?,?,?,?,?,?)")
                .bind(ticket_id as i64)
                .bind(id as i64)
                .bind(&email)
                .bind(format!("Hello, this is {first} {last}. My parcel to {address} has not arrived; please call me on {phone}."))
                .bind(status)
                .bind(ts(opened))
                .bind(closed.map(ts))
                .execute(&mut *tx)
                .await?;
        }
    }
    for id in 1..=sizes.leads {
        let first = FIRST[rng.gen_range(0..FIRST.len())];
        let confirmed = rng.gen_bool(0.9).then(|| ts(now - Duration::days(rng.gen_range(1..4 * 365))));
        sqlx::query(
            "INSERT INTO newsletter_leads (id, email, first_name, ip_address, confirmed_at) VALUES (?,?,?,?,?)",
        )
        .bind(id as i64)
        .bind(format!("{}{}@{}", first.to_lowercase(), id, DOMAINS[rng.gen_range(0..DOMAINS.len())]))
        .bind(first)
        .bind(format!("198.51.100.{}", rng.gen_range(1..255)))
        .bind(confirmed)
        .execute(&mut *tx)
        .await?;
    }
    // A hold in the database itself: checked inside every destroying statement.
    sqlx::query("INSERT INTO legal_holds (id, customer_id, policy, expires_at, matter) VALUES ('DB-HOLD-7', 7, NULL, NULL, 'Subject access request in progress'), ('DB-HOLD-EXPIRED', 8, NULL, '2020-01-01 00:00:00', 'Closed complaint')")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    pool.close().await;
    Ok(())
}

const SCHEMA: &str = r#"
CREATE TABLE customers (
  id INTEGER PRIMARY KEY,
  email TEXT,
  full_name TEXT NOT NULL,
  phone TEXT,
  postal_address TEXT,
  birth_date DATE,
  signup_ip TEXT,
  created_at DATETIME NOT NULL,
  last_order_at DATETIME
);
CREATE TABLE orders (
  id INTEGER PRIMARY KEY,
  customer_id INTEGER NOT NULL REFERENCES customers(id),
  placed_at DATETIME NOT NULL,
  total_cents INTEGER NOT NULL,
  card_last4 TEXT,
  shipping_address TEXT
);
CREATE TABLE order_items (
  id INTEGER PRIMARY KEY,
  order_id INTEGER NOT NULL REFERENCES orders(id),
  sku TEXT NOT NULL,
  quantity INTEGER NOT NULL
);
CREATE TABLE support_tickets (
  id INTEGER PRIMARY KEY,
  customer_id INTEGER REFERENCES customers(id),
  requester_email TEXT,
  body TEXT,
  status TEXT NOT NULL,
  opened_at DATETIME NOT NULL,
  closed_at DATETIME
);
CREATE TABLE newsletter_leads (
  id INTEGER PRIMARY KEY,
  email TEXT NOT NULL,
  first_name TEXT,
  ip_address TEXT,
  confirmed_at DATETIME
);
CREATE TABLE legal_holds (
  id TEXT PRIMARY KEY,
  customer_id INTEGER,
  policy TEXT,
  expires_at DATETIME,
  matter TEXT NOT NULL
);
CREATE INDEX orders_customer ON orders(customer_id);
CREATE INDEX items_order ON order_items(order_id);
CREATE INDEX holds_customer ON legal_holds(customer_id);
"#;
