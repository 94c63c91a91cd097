"""Migration domain: resumable, exactly-once tenant migrations, verified exactly."""
