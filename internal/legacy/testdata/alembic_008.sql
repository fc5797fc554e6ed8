-- The older service's revision 008: devices.active.
ALTER TABLE devices ADD COLUMN active BOOLEAN NOT NULL DEFAULT '1';
UPDATE alembic_version SET version_num = '008';
