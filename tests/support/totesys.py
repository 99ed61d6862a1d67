"""A small totesys for ingest tests: the real schema and two known rows per table."""
from pathlib import Path

SCHEMA_SQL = Path(__file__).resolve().parents[2].joinpath("sql", "totesys_schema.sql").read_text()

# Two rows per table (one per table for the lookups), last_updated a day before the DB clock.
# Tricky values: NULL next to '', a quote and a newline inside a field, a price >= 1000, and a
# timestamp with no fractional part.
FILL_SQL = """
INSERT INTO address (address_line_1, address_line_2, district, city, postal_code, country, phone,
                     created_at, last_updated) VALUES
 ('Flat "A"' || chr(10) || '12 Road', NULL, '', 'Leeds', 'LS1', 'UK', '0113',
  now() - interval '2 days', date_trunc('second', now() - interval '1 day')),
 ('1 Street', 'Upper', 'West', 'Hull', 'HU1', 'UK', '0148', now() - interval '2 days',
  now() - interval '1 day');
INSERT INTO counterparty (counterparty_legal_name, legal_address_id, commercial_contact, delivery_contact,
                          created_at, last_updated)
 VALUES ('Acme', 1, NULL, 'Bob', now() - interval '2 days', now() - interval '1 day');
INSERT INTO currency (currency_code, created_at, last_updated) VALUES
 ('GBP', now() - interval '2 days', now() - interval '1 day'),
 ('USD', now() - interval '2 days', now() - interval '1 day');
INSERT INTO department (department_name, location, manager, created_at, last_updated)
 VALUES ('Sales', 'Leds', NULL, now() - interval '2 days', now() - interval '1 day');
INSERT INTO design (created_at, design_name, file_location, file_name, last_updated)
 VALUES (now() - interval '2 days', 'Wooden', '/usr', 'wooden.json', now() - interval '1 day');
INSERT INTO staff (first_name, last_name, department_id, email_address, created_at, last_updated)
 VALUES ('Ann', 'Lee', 1, 'ann.lee@terrifictotes.com', now() - interval '2 days', now() - interval '1 day');
INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, units_sold,
                         unit_price, currency_id, agreed_delivery_date, agreed_payment_date,
                         agreed_delivery_location_id) VALUES
 (now() - interval '2 days', now() - interval '1 day', 1, 1, 1, 1001, 2.50, 1, '2024-11-27', '2024-11-28', 2),
 (now() - interval '2 days', now() - interval '1 day', 1, 1, 1, 99973, 1234.50, 2, '2024-11-29',
  '2024-11-30', 1);
INSERT INTO purchase_order (created_at, last_updated, staff_id, counterparty_id, item_code, item_quantity,
                            item_unit_price, currency_id, agreed_delivery_date, agreed_payment_date,
                            agreed_delivery_location_id)
 VALUES (now() - interval '2 days', now() - interval '1 day', 1, 1, 'ZDOI5EA', 371, 361.39, 1,
         '2024-11-27', '2024-11-28', 1);
INSERT INTO payment_type (payment_type_name, created_at, last_updated) VALUES
 ('SALES_RECEIPT', now() - interval '2 days', now() - interval '1 day'),
 ('PURCHASE_PAYMENT', now() - interval '2 days', now() - interval '1 day');
INSERT INTO transaction (transaction_type, sales_order_id, purchase_order_id, created_at, last_updated) VALUES
 ('SALE', 1, NULL, now() - interval '2 days', now() - interval '1 day'),
 ('PURCHASE', NULL, 1, now() - interval '2 days', now() - interval '1 day');
INSERT INTO payment (created_at, last_updated, transaction_id, counterparty_id, payment_amount, currency_id,
                     payment_type_id, paid, payment_date, company_ac_number, counterparty_ac_number)
 VALUES (now() - interval '2 days', now() - interval '1 day', 1, 1, 2502.50, 1, 1, false, '2024-11-28',
         67305502, 31622269);
"""
