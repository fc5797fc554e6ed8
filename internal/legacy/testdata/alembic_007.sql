-- The older service's revision 007: coredumps.filename dropped.
ALTER TABLE coredumps DROP COLUMN filename;
UPDATE alembic_version SET version_num = '007';
