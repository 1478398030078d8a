"""Command-line tools beside the main job: the stand-ins' builder, the real-path rehearsal and
the memory estimates."""
