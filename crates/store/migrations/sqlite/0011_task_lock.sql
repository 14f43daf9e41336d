-- The task that holds the instance: taken in the transaction that begins a task,
-- given back in the one that records its end. One task at a time per instance.
ALTER TABLE instances ADD COLUMN held_by TEXT;
-- Instances with a task still unfinished (resumed at start) are held by it.
UPDATE instances SET held_by = (
    SELECT t.id FROM tasks t
    WHERE t.instance_id = instances.id AND t.state IN ('pending', 'running')
    ORDER BY t.created_at LIMIT 1
) WHERE deleted_at IS NULL;
