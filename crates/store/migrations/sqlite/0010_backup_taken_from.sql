-- Which member a backup was taken from (a replica when the instance had one).
ALTER TABLE backups ADD COLUMN taken_from TEXT;
