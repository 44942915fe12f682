-- Sakila's dump assigns ownership to a role named postgres; the compose superuser is cdc.
DO $$ BEGIN CREATE ROLE postgres; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
