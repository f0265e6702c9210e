"""The benchmark grid on the real data (`cotpd bench`): grid, trainings, claims, report, LLM client bench."""
