DROP TABLE IF EXISTS profile_generations;
DROP TABLE IF EXISTS profile_generation_job_items;
