// Backups of a coordinator's whole state, and their restore (docs/operations.md, "Backup and
// restore"). A backup is one ustar file (rpc/tar.h): its manifest member `trm-backup.json`, then
// coordinator.db (SQLite's online backup, taken between two changes), every stored dataset
// (datasets/HASH.manifest, datasets/HASH/...) and every checkpoint the database lists
// (checkpoints/JOB/NAME/...), each with its SHA-256. What the coordinator derives again on
// demand (dataset shards, weights-only forms) is left out.
#pragma once

#include <cstdint>
#include <string>

namespace trm::coordinator {

struct RestoreResult {
  int64_t files = 0;
  uint64_t bytes = 0;
};

// trm-coordinator --restore: extracts `archive` into `data_dir`, which must hold no
// coordinator.db (a restore never overwrites a live state: kFailedPrecondition). Every file is
// verified before anything is moved into place; a newer release's backup is refused
// (kFailedPrecondition) and nothing is left behind. Attempts that were running when the backup
// was taken are void (their ranks went on past the snapshot): the Coordinator that next opens
// `data_dir` queues them again without using a restart, to resume from the latest checkpoint
// in the backup.
RestoreResult RestoreBackup(const std::string& archive, const std::string& data_dir);

// Removes what an interrupted backup staged in `data_dir` (the coordinator calls it at start).
void RemoveBackupStages(const std::string& data_dir);

}  // namespace trm::coordinator
