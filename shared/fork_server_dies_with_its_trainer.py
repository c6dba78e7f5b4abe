"""Imported in the DataLoader workers' fork server alone (`shared.loader_workers` preloads it there): the server
asks the kernel to SIGKILL it when the trainer that started it ends, however the trainer ends. Its workers then
find their parent gone and leave within seconds (torch's worker watchdog)."""

from shared.process_tree import die_with_parent

die_with_parent()
