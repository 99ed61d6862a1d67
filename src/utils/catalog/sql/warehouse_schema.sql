-- The ToteSys warehouse (SPEC section 3, "RevisedDW"), plus the load ledger, the fact version
-- indexes and the current-state views. Every statement is idempotent: load runs this file when any
-- object is missing, against an empty database or an existing warehouse alike.
-- Statements are separated by a semicolon at the end of a line (the loader splits on that).
-- A template: the columns of the eleven warehouse tables are the catalogue's (utils.catalog.warehouse
-- WAREHOUSE_SCHEMAS: name, type, NOT NULL), rendered in place of each {columns:<table>} marker by
-- warehouse_ddl(); this file keeps what the catalogue does not say: keys, foreign keys, the fact tables'
-- record ids and load order, indexes, the ledger tables, the sequence and the views.

CREATE TABLE IF NOT EXISTS dim_date (
    {columns:dim_date},
    PRIMARY KEY (date_id)
);

CREATE TABLE IF NOT EXISTS dim_staff (
    {columns:dim_staff},
    PRIMARY KEY (staff_id)
);

CREATE TABLE IF NOT EXISTS dim_location (
    {columns:dim_location},
    PRIMARY KEY (location_id)
);

CREATE TABLE IF NOT EXISTS dim_currency (
    {columns:dim_currency},
    PRIMARY KEY (currency_id)
);

CREATE TABLE IF NOT EXISTS dim_design (
    {columns:dim_design},
    PRIMARY KEY (design_id)
);

CREATE TABLE IF NOT EXISTS dim_counterparty (
    {columns:dim_counterparty},
    PRIMARY KEY (counterparty_id)
);

CREATE TABLE IF NOT EXISTS dim_transaction (
    {columns:dim_transaction},
    PRIMARY KEY (transaction_id)
);

CREATE TABLE IF NOT EXISTS dim_payment_type (
    {columns:dim_payment_type},
    PRIMARY KEY (payment_type_id)
);

CREATE TABLE IF NOT EXISTS fact_sales_order (
    sales_record_id serial PRIMARY KEY,
    {columns:fact_sales_order},
    etl_load_order bigint NOT NULL DEFAULT 0,
    FOREIGN KEY (created_date) REFERENCES dim_date (date_id),
    FOREIGN KEY (last_updated_date) REFERENCES dim_date (date_id),
    FOREIGN KEY (sales_staff_id) REFERENCES dim_staff (staff_id),
    FOREIGN KEY (counterparty_id) REFERENCES dim_counterparty (counterparty_id),
    FOREIGN KEY (currency_id) REFERENCES dim_currency (currency_id),
    FOREIGN KEY (design_id) REFERENCES dim_design (design_id),
    FOREIGN KEY (agreed_payment_date) REFERENCES dim_date (date_id),
    FOREIGN KEY (agreed_delivery_date) REFERENCES dim_date (date_id),
    FOREIGN KEY (agreed_delivery_location_id) REFERENCES dim_location (location_id)
);

CREATE TABLE IF NOT EXISTS fact_purchase_order (
    purchase_record_id serial PRIMARY KEY,
    {columns:fact_purchase_order},
    etl_load_order bigint NOT NULL DEFAULT 0,
    FOREIGN KEY (created_date) REFERENCES dim_date (date_id),
    FOREIGN KEY (last_updated_date) REFERENCES dim_date (date_id),
    FOREIGN KEY (staff_id) REFERENCES dim_staff (staff_id),
    FOREIGN KEY (counterparty_id) REFERENCES dim_counterparty (counterparty_id),
    FOREIGN KEY (currency_id) REFERENCES dim_currency (currency_id),
    FOREIGN KEY (agreed_delivery_date) REFERENCES dim_date (date_id),
    FOREIGN KEY (agreed_payment_date) REFERENCES dim_date (date_id),
    FOREIGN KEY (agreed_delivery_location_id) REFERENCES dim_location (location_id)
);

CREATE TABLE IF NOT EXISTS fact_payment (
    payment_record_id serial PRIMARY KEY,
    {columns:fact_payment},
    etl_load_order bigint NOT NULL DEFAULT 0,
    FOREIGN KEY (created_date) REFERENCES dim_date (date_id),
    FOREIGN KEY (last_updated_date) REFERENCES dim_date (date_id),
    FOREIGN KEY (transaction_id) REFERENCES dim_transaction (transaction_id),
    FOREIGN KEY (counterparty_id) REFERENCES dim_counterparty (counterparty_id),
    FOREIGN KEY (currency_id) REFERENCES dim_currency (currency_id),
    FOREIGN KEY (payment_type_id) REFERENCES dim_payment_type (payment_type_id),
    FOREIGN KEY (payment_date) REFERENCES dim_date (date_id)
);


-- The exactly-once ledger: a batch is loaded in the same transaction that inserts its row here.
CREATE TABLE IF NOT EXISTS etl_load_ledger (
    batch_id varchar PRIMARY KEY,
    manifest_key varchar NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    row_counts jsonb NOT NULL,
    load_order bigint
);

-- Rows the warehouse could not hold (SPEC §4.10), one record per source row version: source id,
-- last_updated and value_key, a hash of the row's values (two versions of one stamp are two records;
-- docs/RELIABILITY.md defect 16). A fact row held back only because a dimension row it references is
-- missing keeps its staged values in row_data and is parked: every later load retries it, and
-- resolved_batch_id names the batch that finally loaded it.
CREATE TABLE IF NOT EXISTS etl_rejected_rows (
    rejected_id bigserial PRIMARY KEY,
    source_table varchar NOT NULL,
    source_id bigint,
    last_updated timestamp(3),
    column_name varchar NOT NULL,
    reason varchar NOT NULL,
    value varchar,
    batch_id varchar NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now(),
    row_data jsonb,
    resolved_batch_id varchar,
    value_key varchar NOT NULL DEFAULT ''
);

-- The version of every dimension row: the source's last_updated and the load order of the batch that
-- wrote it. The latest LOADED version is the dimension's row (a batch carries the source's state at its
-- snapshot, which is never older than an earlier batch's, whatever the source's clock said).
CREATE TABLE IF NOT EXISTS etl_dimension_version (
    table_name varchar NOT NULL,
    source_id integer NOT NULL,
    last_updated timestamp(3) NOT NULL,
    load_order bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (table_name, source_id)
);

-- Rows hard-deleted in totesys (SPEC 4.12), detected by ingest from primary-key sets and recorded in the
-- transaction of the batch that carried them. A deletion stays "open" until a later batch brings a row of
-- the same source id again (the id was re-inserted): reinserted_batch_id then names that batch. One open
-- deletion per source row, and one record per (row, batch), whatever the retries and replays.
CREATE TABLE IF NOT EXISTS etl_deleted_rows (
    deleted_id bigserial PRIMARY KEY,
    source_table varchar NOT NULL,
    source_id integer NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now(),
    batch_id varchar NOT NULL,
    reinserted_batch_id varchar
);

CREATE UNIQUE INDEX IF NOT EXISTS etl_deleted_rows_open_key
    ON etl_deleted_rows (source_table, source_id) WHERE reinserted_batch_id IS NULL;

CREATE UNIQUE INDEX IF NOT EXISTS etl_deleted_rows_batch_key
    ON etl_deleted_rows (source_table, source_id, batch_id);

-- Foreign keys of a fact table suspended while a large load appends (utils/load/constraints.py): each
-- batch checks its rows' references itself meanwhile; the end of the execution re-adds each key NOT VALID
-- (re_added) and validates it set-wise, then forgets it. column_name etc.: single-column keys only.
CREATE TABLE IF NOT EXISTS etl_suspended_foreign_key (
    table_name varchar NOT NULL,
    constraint_name varchar NOT NULL,
    definition text NOT NULL,
    was_validated boolean NOT NULL,
    column_name varchar,
    referenced_table varchar,
    referenced_column varchar,
    re_added boolean NOT NULL DEFAULT false,
    suspended_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, constraint_name)
);

-- The load order (docs/RELIABILITY.md defect 3): each loaded batch takes the next value, recorded in
-- etl_load_ledger.load_order; every fact row carries its batch's (etl_load_order; a parked row keeps the
-- order of the batch that parked it; a batch bringing back a version already held re-marks it). The
-- current version of a row is the one loaded last, not the one with the greatest last_updated, which
-- goes back with the source's clock. A warehouse created before it gets the columns here (rows loaded
-- before have order 0, ordered among themselves by last_updated as before).
CREATE SEQUENCE IF NOT EXISTS etl_load_order_seq AS bigint;

ALTER TABLE etl_load_ledger ADD COLUMN IF NOT EXISTS load_order bigint;

ALTER TABLE etl_dimension_version ADD COLUMN IF NOT EXISTS load_order bigint NOT NULL DEFAULT 0;

ALTER TABLE fact_sales_order ADD COLUMN IF NOT EXISTS etl_load_order bigint NOT NULL DEFAULT 0;

ALTER TABLE fact_purchase_order ADD COLUMN IF NOT EXISTS etl_load_order bigint NOT NULL DEFAULT 0;

ALTER TABLE fact_payment ADD COLUMN IF NOT EXISTS etl_load_order bigint NOT NULL DEFAULT 0;

-- One fact row per source version and batch: a batch loaded twice, or a version landed by two overlapping
-- ingest batches, is recorded once (the load takes a version it holds, same stamp and values, out of its
-- stage); an update that kept its stamp and changed values is a new version, of the batch's load order
-- (docs/DESIGN.md, "A version is its stamp and its values"). The index (natural id, last_updated) of the
-- warehouses created before is replaced.
CREATE UNIQUE INDEX IF NOT EXISTS fact_sales_order_version_order_key
    ON fact_sales_order (sales_order_id, last_updated_date, last_updated_time, etl_load_order);

CREATE UNIQUE INDEX IF NOT EXISTS fact_purchase_order_version_order_key
    ON fact_purchase_order (purchase_order_id, last_updated_date, last_updated_time, etl_load_order);

CREATE UNIQUE INDEX IF NOT EXISTS fact_payment_version_order_key
    ON fact_payment (payment_id, last_updated_date, last_updated_time, etl_load_order);

DROP INDEX IF EXISTS fact_sales_order_version_key;

DROP INDEX IF EXISTS fact_purchase_order_version_key;

DROP INDEX IF EXISTS fact_payment_version_key;

-- One record per rejected version, its stamp and its values (value_key: the transform's and the load's
-- hash of the row, utils.catalog.formats.value_keys; a parked row's, utils.load.merge.PARKED_VALUE_KEY).
-- A warehouse created before value keys had one per stamp: its records get the empty key, except the
-- parked ones, which get the key of their row data (re-parked, they stay the same record); a record with
-- the empty key takes the key of the first version of its stamp read again (utils.load.merge.claim_unkeyed).
ALTER TABLE etl_rejected_rows ADD COLUMN IF NOT EXISTS value_key varchar NOT NULL DEFAULT '';

UPDATE etl_rejected_rows SET value_key = md5(jsonb_strip_nulls(row_data - 'etl_load_order')::text)
    WHERE value_key = '' AND row_data IS NOT NULL;

DROP INDEX IF EXISTS etl_rejected_rows_version_key;

CREATE UNIQUE INDEX IF NOT EXISTS etl_rejected_rows_value_version_key
    ON etl_rejected_rows (source_table, source_id, last_updated, value_key);

-- Current state: the latest version of each order and payment that still exists in totesys (full
-- history, deleted rows included, stays in the facts): the version loaded last (etl_load_order), of one
-- batch's versions the latest stamped.
CREATE OR REPLACE VIEW current_sales_order AS
SELECT DISTINCT ON (sales_order_id) f.*
FROM fact_sales_order f
WHERE NOT EXISTS (SELECT 1 FROM etl_deleted_rows d WHERE d.source_table = 'sales_order'
                  AND d.source_id = f.sales_order_id AND d.reinserted_batch_id IS NULL)
ORDER BY sales_order_id, etl_load_order DESC, last_updated_date DESC, last_updated_time DESC, sales_record_id DESC;

CREATE OR REPLACE VIEW current_purchase_order AS
SELECT DISTINCT ON (purchase_order_id) f.*
FROM fact_purchase_order f
WHERE NOT EXISTS (SELECT 1 FROM etl_deleted_rows d WHERE d.source_table = 'purchase_order'
                  AND d.source_id = f.purchase_order_id AND d.reinserted_batch_id IS NULL)
ORDER BY purchase_order_id, etl_load_order DESC, last_updated_date DESC, last_updated_time DESC, purchase_record_id DESC;

CREATE OR REPLACE VIEW current_payment AS
SELECT DISTINCT ON (payment_id) f.*
FROM fact_payment f
WHERE NOT EXISTS (SELECT 1 FROM etl_deleted_rows d WHERE d.source_table = 'payment'
                  AND d.source_id = f.payment_id AND d.reinserted_batch_id IS NULL)
ORDER BY payment_id, etl_load_order DESC, last_updated_date DESC, last_updated_time DESC, payment_record_id DESC;

-- Dimension rows whose source row no longer exists in totesys. They stay in their dimension (facts, the
-- history, reference them); this view says which ones are gone and since when.
CREATE OR REPLACE VIEW deleted_dimension_rows AS
SELECT CASE d.source_table WHEN 'address' THEN 'dim_location' WHEN 'counterparty' THEN 'dim_counterparty'
       WHEN 'staff' THEN 'dim_staff' WHEN 'design' THEN 'dim_design' WHEN 'currency' THEN 'dim_currency'
       WHEN 'payment_type' THEN 'dim_payment_type' WHEN 'transaction' THEN 'dim_transaction' END AS dimension,
       d.source_id AS dimension_id, d.source_table, d.detected_at, d.batch_id
FROM etl_deleted_rows d
WHERE d.reinserted_batch_id IS NULL
  AND d.source_table IN ('address', 'counterparty', 'staff', 'design', 'currency', 'payment_type', 'transaction');
