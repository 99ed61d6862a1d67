-- The dashboard's rollups (utils.load.rollups): small aggregates of the CURRENT state (the current_* views)
-- that the load keeps up to date in each batch's own transaction. Keys are dimension ids (names are
-- joined at read time, so a renamed staff member or country needs no rollup change), except design_name:
-- ~100 designs per name at scale, so per design id a rollup would be as large as the facts.
-- Every statement is idempotent; utils.load.rollups runs this file when etl_rollup_state is missing or
-- records another definition. Statements are separated by a semicolon at the end of a line.
-- Each batch updates measures in place (never a key): fillfactor 70 leaves room on each page so those
-- updates are HOT (no new index entry, no page split): a backfill batch's sales delta ran 2-4x faster at
-- x10 (docs/BENCHMARKS.md); the tables are small, so the 30% of free space costs little.

-- How far the rollups have been brought: per fact table, the highest record id (serial) they cover,
-- the highest natural id (sales_order_id...) among those records (an id above it has no version the
-- rollups hold: a batch's new orders cost no probe), the rollup definition they were built with, and a
-- revision bumped by every change (the dashboard's cache key, with the last batch id).
CREATE TABLE IF NOT EXISTS etl_rollup_state (
    fact_table varchar PRIMARY KEY,
    last_record_id bigint NOT NULL,
    max_id bigint NOT NULL,
    definition integer NOT NULL,
    revision bigint NOT NULL,
    batch_id varchar
);

-- Current sales orders per creation day and currency.
CREATE TABLE IF NOT EXISTS rollup_sales_daily (
    created_date date NOT NULL,
    currency_id integer NOT NULL,
    orders bigint NOT NULL,
    units bigint NOT NULL,
    sales_value numeric NOT NULL,
    PRIMARY KEY (created_date, currency_id)
) WITH (fillfactor = 70);

-- ... per day, currency and delivery location (dim_location.location_id).
CREATE TABLE IF NOT EXISTS rollup_sales_by_location (
    created_date date NOT NULL,
    currency_id integer NOT NULL,
    location_id integer NOT NULL,
    orders bigint NOT NULL,
    sales_value numeric NOT NULL,
    PRIMARY KEY (created_date, currency_id, location_id)
) WITH (fillfactor = 70);

-- ... per day, currency and sales staff member (dim_staff.staff_id).
CREATE TABLE IF NOT EXISTS rollup_sales_by_staff (
    created_date date NOT NULL,
    currency_id integer NOT NULL,
    staff_id integer NOT NULL,
    orders bigint NOT NULL,
    sales_value numeric NOT NULL,
    PRIMARY KEY (created_date, currency_id, staff_id)
) WITH (fillfactor = 70);

-- ... per day, currency and design NAME (as dim_design names it now).
CREATE TABLE IF NOT EXISTS rollup_sales_by_design (
    created_date date NOT NULL,
    currency_id integer NOT NULL,
    design_name varchar NOT NULL,
    orders bigint NOT NULL,
    units bigint NOT NULL,
    sales_value numeric NOT NULL,
    PRIMARY KEY (created_date, currency_id, design_name)
) WITH (fillfactor = 70);

-- The name rollup_sales_by_design files each design under (dim_design's name when the rollup was last
-- brought up to date): when a batch renames a design, its current orders move from this name to the new.
CREATE TABLE IF NOT EXISTS rollup_design_name (
    design_id integer PRIMARY KEY,
    design_name varchar NOT NULL
);

-- Current purchase orders per creation day and currency.
CREATE TABLE IF NOT EXISTS rollup_purchase_daily (
    created_date date NOT NULL,
    currency_id integer NOT NULL,
    orders bigint NOT NULL,
    purchase_value numeric NOT NULL,
    PRIMARY KEY (created_date, currency_id)
) WITH (fillfactor = 70);

-- Current payments per creation day, currency, payment type and paid flag.
CREATE TABLE IF NOT EXISTS rollup_payment_daily (
    created_date date NOT NULL,
    currency_id integer NOT NULL,
    payment_type_id integer NOT NULL,
    paid boolean NOT NULL,
    payments bigint NOT NULL,
    amount numeric NOT NULL,
    PRIMARY KEY (created_date, currency_id, payment_type_id, paid)
) WITH (fillfactor = 70);
