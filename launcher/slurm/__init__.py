"""SLURM support for the launcher (torch-free): render batch scripts from cluster/templates/ with
every value quoted (render, quoting), submit them and ask about jobs (sbatch), check a job before
it is queued (checks), and read a run dir's job records and progress (records, run_status).
See docs/cluster.md."""
