-- Locations' overrides of the provider code tables (ReportDeliveryEvent): one row per
-- (provider, code), both normalised as the service matches them.
CREATE TABLE dnd_delivery_overrides (
    location_id  text NOT NULL,
    provider     text NOT NULL,
    code         text NOT NULL,
    channel      text NOT NULL,
    -- The reason the code sets; '' when the location ignores the code.
    reason       text NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (location_id, provider, code)
);
