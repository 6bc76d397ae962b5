DROP INDEX work_exclusion;
DROP FUNCTION process_exclusion_group(process);
