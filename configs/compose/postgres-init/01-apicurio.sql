-- Run once by the postgres image's entrypoint, on the first start with an empty data volume
-- (files in /docker-entrypoint-initdb.d, as POSTGRES_USER). The schema registry (Apicurio, SQL
-- storage) keeps its schemas here so that schema ids survive a registry restart; it creates its
-- own tables on first start. Same as scripts/services/postgres.sh does for the private instance.
CREATE DATABASE apicurio;
