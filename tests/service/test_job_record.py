"""A job's record in Redis: what `GET /edits/{job_id}` reads."""

from __future__ import annotations

import redis

from service.keys import Keys
from service.queue import Job, JobQueue, new_id


def test_a_job_is_verified_only_once_its_results_are_stored(redis_url: str, redis_prefix: str):
    """The worker marks a job applied at the commit and stores the per-edit check just
    after; until then the record says `verified` false (results [] is not "none passed")."""
    queue = JobQueue(redis.Redis.from_url(redis_url), Keys(redis_prefix), 100, 60)
    queue.ensure_group()
    edit = {"edit_id": new_id("e"), "prompt": "The capital of France is", "target": "Rome"}
    job = Job(new_id("job"), "add", [edit], [edit["edit_id"]])
    queue.enqueue(job)
    record = queue.job(job.job_id)
    assert record is not None and record["status"] == "queued"
    assert record["results"] == [] and record["verified"] is False
    queue.mark(job.job_id, status="applied", version="1")
    assert queue.job(job.job_id)["verified"] is False  # type: ignore[index]
    result = {"edit_id": edit["edit_id"], "generated": " Rome.", "success": True}
    queue.set_results(job.job_id, [result])
    record = queue.job(job.job_id)
    assert record is not None and record["verified"] is True
    assert record["results"] == [result]
