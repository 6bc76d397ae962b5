DROP INDEX IF EXISTS machine_provided_provider_id;
