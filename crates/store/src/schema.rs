//! The schema, as numbered migrations that both backends apply in the same
//! order: version N means the same tables on SQLite and on PostgreSQL. The
//! tables are one text for both; how other processes learn of a change is
//! each engine's own (a change log SQLite readers poll, `NOTIFY` on
//! PostgreSQL), so those steps have a text per engine.

/// One schema step.
pub(crate) struct Migration {
    pub what: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// Records and ports: the same SQL on both engines.
const TABLES: &str = "CREATE TABLE instances (
        uuid TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        password TEXT NOT NULL DEFAULT '',
        revision BIGINT NOT NULL
     );
     CREATE TABLE ports (
        instance_uuid TEXT NOT NULL REFERENCES instances(uuid) ON DELETE CASCADE,
        network_id TEXT NOT NULL,
        mac TEXT NOT NULL,
        ip TEXT
     );
     CREATE UNIQUE INDEX ports_network_ip ON ports(network_id, ip) WHERE ip IS NOT NULL;
     CREATE INDEX ports_ip ON ports(ip);
     CREATE INDEX ports_network_mac ON ports(network_id, mac);
     CREATE INDEX ports_instance ON ports(instance_uuid);";

/// Every write of `instances` is logged with what changed: `record` (the
/// tree and maybe the addresses) or `password` (only the password).
const SQLITE_CHANGE_LOG: &str = "CREATE TABLE changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid TEXT NOT NULL,
        kind TEXT NOT NULL
     );
     CREATE TRIGGER instances_inserted AFTER INSERT ON instances BEGIN
        INSERT INTO changes (uuid, kind) VALUES (new.uuid, 'record');
     END;
     CREATE TRIGGER instances_updated AFTER UPDATE ON instances BEGIN
        INSERT INTO changes (uuid, kind)
        VALUES (new.uuid, CASE WHEN old.record = new.record THEN 'password' ELSE 'record' END);
     END;
     CREATE TRIGGER instances_deleted AFTER DELETE ON instances BEGIN
        INSERT INTO changes (uuid, kind) VALUES (old.uuid, 'record');
     END;";

/// The same announcement as a notification on [`NOTIFY_CHANNEL`], sent by
/// PostgreSQL at commit to every listening replica, whoever wrote.
const POSTGRES_NOTIFY: &str = "CREATE FUNCTION meta169_instance_changed() RETURNS trigger
     LANGUAGE plpgsql AS $$
     BEGIN
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('meta169_changes', 'record ' || OLD.uuid);
        ELSIF TG_OP = 'UPDATE' AND OLD.record = NEW.record THEN
            PERFORM pg_notify('meta169_changes', 'password ' || NEW.uuid);
        ELSE
            PERFORM pg_notify('meta169_changes', 'record ' || NEW.uuid);
        END IF;
        RETURN NULL;
     END
     $$;
     CREATE TRIGGER instances_changed AFTER INSERT OR UPDATE OR DELETE ON instances
        FOR EACH ROW EXECUTE FUNCTION meta169_instance_changed();";

/// The channel [`POSTGRES_NOTIFY`] announces on.
pub(crate) const NOTIFY_CHANNEL: &str = "meta169_changes";

/// Migrations, oldest first; index + 1 is the schema version they produce.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        what: "records and ports",
        sqlite: TABLES,
        postgres: TABLES,
    },
    Migration {
        what: "announce changes to other processes",
        sqlite: SQLITE_CHANGE_LOG,
        postgres: POSTGRES_NOTIFY,
    },
    Migration {
        what: "find ports by MAC on any network (identity by MAC)",
        sqlite: PORTS_MAC,
        postgres: PORTS_MAC,
    },
];

/// Standalone servers find a guest by its MAC alone.
const PORTS_MAC: &str = "CREATE INDEX ports_mac ON ports(mac);";

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// The refusal for a database a newer meta169 migrated.
pub(crate) fn too_new(current: i64) -> crate::StoreError {
    crate::StoreError::Backend(format!(
        "database schema version {current} is newer than this meta169 knows ({}); upgrade meta169",
        latest_version()
    ))
}
