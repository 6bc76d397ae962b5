-- Operators name machines by provider id alone (`bmctl history srv-1234`),
-- without the provider: the unique (provider, provider_id) index cannot serve
-- that lookup, so a fleet-wide scan would.
CREATE INDEX machine_provided_provider_id ON machine_provided (provider_id);
