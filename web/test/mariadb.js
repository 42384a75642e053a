// A MariaDB database of the test's own, on the server
// AXION_PUSH_TEST_MARIADB names (default: the machine's,
// mysql://root@127.0.0.1:3306, which .ci/run starts), dropped at the end.
// A server that cannot be reached fails the test, saying so: a test must
// not pass, nor be skipped, because a service is missing.

import { randomUUID } from 'node:crypto';
import mariadb from 'mariadb';

export const MARIADB_SERVER = (process.env.AXION_PUSH_TEST_MARIADB || 'mysql://root@127.0.0.1:3306').replace(/\/+$/, '');

function connectionOptions(database) {
  const url = new URL(MARIADB_SERVER.replace(/^mariadb:/, 'mysql:'));
  return {
    host: url.hostname,
    port: Number(url.port || 3306),
    user: decodeURIComponent(url.username),
    password: decodeURIComponent(url.password) || undefined,
    database,
    multipleStatements: true,
    connectTimeout: 5000,
  };
}

export class TestDatabase {
  /** A fresh database `axion_push_web_…` on the server. */
  static async create() {
    const name = `axion_push_web_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
    let admin;
    try {
      admin = await mariadb.createConnection(connectionOptions());
    } catch (error) {
      throw new Error(
        `MariaDB is not reachable at ${MARIADB_SERVER} (${error.message}). This test needs it: ` +
          'start MariaDB (.ci/run does) or set AXION_PUSH_TEST_MARIADB to a mysql:// server URL.',
      );
    }
    try {
      await admin.query(`CREATE DATABASE ${name}`);
    } finally {
      await admin.end();
    }
    const db = new TestDatabase(name);
    db.connection = await mariadb.createConnection(connectionOptions(name));
    return db;
  }

  constructor(name) {
    this.name = name;
    /** What the daemon's `database.url` names. */
    this.url = `${MARIADB_SERVER}/${name}`;
  }

  /** Runs `sql` (one or more statements) with `values` for its `?`s. */
  query(sql, values) {
    return this.connection.query(sql, values);
  }

  async drop() {
    await this.connection?.end();
    const admin = await mariadb.createConnection(connectionOptions());
    try {
      await admin.query(`DROP DATABASE IF EXISTS ${this.name}`);
    } finally {
      await admin.end();
    }
  }
}
