-- Split the catch-all ShepherdAccess into ShepherdAgentStart and
-- ShepherdRecovery, so that work history shows what the shepherd was trying to
-- do. ShepherdAccess stays: an old shepherd may still hold work with it during
-- a rolling upgrade. The three exclude each other (next migration).
ALTER TYPE process ADD VALUE IF NOT EXISTS 'ShepherdAgentStart';
ALTER TYPE process ADD VALUE IF NOT EXISTS 'ShepherdRecovery';
