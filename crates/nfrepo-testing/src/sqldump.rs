//! A deterministic stand-in for `mysqldump` output of sysbench tables.
//!
//! sysbench's `oltp` tables are `(id INT, k INT, c CHAR(120), pad CHAR(60))`
//! where `c` is ten and `pad` five dash-separated groups of 11 random digits.
//! `mysqldump --extended-insert` (the default) writes them as multi-row
//! `INSERT` statements, starting a new one when the line would pass
//! `net_buffer_length` (1 MiB by default), so the dump is mostly ~1 MB lines
//! of digits, dashes, quotes and parentheses: about as compressible as a
//! real one, and with no repeats for the chunker to find.

use std::io::Write;

use crate::XorShift;

/// Rows per table before the dump moves to the next `sbtest<N>`.
const ROWS_PER_TABLE: u64 = 250_000;
/// Where mysqldump ends an extended insert (its default `net_buffer_length`).
const LINE_LIMIT: usize = 1024 * 1024;

/// sysbench's way of filling `c` and `pad`: `groups` dash-separated groups of 11 digits.
fn digit_groups(rng: &mut XorShift, groups: usize, out: &mut Vec<u8>) {
    for i in 0..groups {
        if i > 0 {
            out.push(b'-');
        }
        let group = rng.next_u64() % 100_000_000_000;
        let _ = write!(out, "{group:011}");
    }
}

/// Exactly `len` bytes of dump text; the same `seed` gives the same bytes.
pub fn generate(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift::new(seed);
    let mut out = Vec::with_capacity(len + 2 * LINE_LIMIT);
    out.extend_from_slice(
        b"-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)\n--\n-- Host: localhost    Database: sbtest\n\
          -- ------------------------------------------------------\n\
          /*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n/*!50503 SET NAMES utf8mb4 */;\n\
          /*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n",
    );
    let mut table = 0u64;
    while out.len() < len {
        table += 1;
        let _ = write!(
            out,
            "\n--\n-- Table structure for table `sbtest{table}`\n--\n\n\
             DROP TABLE IF EXISTS `sbtest{table}`;\n\
             CREATE TABLE `sbtest{table}` (\n  `id` int NOT NULL AUTO_INCREMENT,\n  `k` int NOT NULL DEFAULT '0',\n  \
             `c` char(120) NOT NULL DEFAULT '',\n  `pad` char(60) NOT NULL DEFAULT '',\n  PRIMARY KEY (`id`),\n  \
             KEY `k_{table}` (`k`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci;\n\n\
             --\n-- Dumping data for table `sbtest{table}`\n--\n\n\
             LOCK TABLES `sbtest{table}` WRITE;\n/*!40000 ALTER TABLE `sbtest{table}` DISABLE KEYS */;\n"
        );
        let mut id = 1u64;
        while id <= ROWS_PER_TABLE && out.len() < len {
            let line_start = out.len();
            let _ = write!(out, "INSERT INTO `sbtest{table}` VALUES ");
            let mut first = true;
            while id <= ROWS_PER_TABLE && out.len() - line_start < LINE_LIMIT - 256 {
                if !first {
                    out.push(b',');
                }
                first = false;
                let k = rng.next_u64() % ROWS_PER_TABLE + 1;
                let _ = write!(out, "({id},{k},'");
                digit_groups(&mut rng, 10, &mut out);
                out.extend_from_slice(b"','");
                digit_groups(&mut rng, 5, &mut out);
                out.extend_from_slice(b"')");
                id += 1;
            }
            out.extend_from_slice(b";\n");
        }
        let _ = write!(
            out,
            "/*!40000 ALTER TABLE `sbtest{table}` ENABLE KEYS */;\nUNLOCK TABLES;\n"
        );
    }
    out.truncate(len);
    out
}
