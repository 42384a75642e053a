// Starts the browsers the tests drive, with clear errors when one is missing.

import puppeteer from 'puppeteer-core';

export const FIREFOX = process.env.FIREFOX_BIN || '/usr/bin/firefox-esr';
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

/**
 * Firefox ESR, headless, whose push service is `push` (a PushService):
 * insecure ws:// allowed and the push permission implied (the testing prefs
 * of Firefox's own push tests), notifications allowed, shown in Firefox's
 * own alert window rather than the desktop's, and chrome reachable over
 * WebDriver BiDi so a test can read and click that window.
 */
export async function launchFirefox(push) {
  try {
    return await puppeteer.launch({
      browser: 'firefox',
      executablePath: FIREFOX,
      headless: true,
      env: { ...process.env, MOZ_REMOTE_ALLOW_SYSTEM_ACCESS: '1' },
      extraPrefsFirefox: {
        'dom.push.enabled': true,
        'dom.push.connection.enabled': true,
        'dom.push.serverURL': push.wsUrl,
        'dom.push.testing.allowInsecureServerURL': true,
        'dom.push.testing.ignorePermission': true,
        'dom.push.retryBaseInterval': 200,
        'permissions.default.desktop-notification': 1,
        'alerts.useSystemBackend': false,
        'alerts.disableSlidingEffect': true,
      },
    });
  } catch (error) {
    throw new Error(`Firefox did not start from ${FIREFOX} (web/run-tests.sh installs firefox-esr): ${error.message}`);
  }
}

/**
 * A host Chromium resolves to 127.0.0.1 without it being "localhost", so a
 * page served from it over http is not a secure context.
 */
export const INSECURE_HOST = 'insecure.axion-push.test';

/** Chromium, headless, with the flags this machine's closed network needs. */
export async function launchChromium() {
  try {
    return await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        `--host-resolver-rules=MAP ${INSECURE_HOST} 127.0.0.1`,
      ],
    });
  } catch (error) {
    throw new Error(`Chromium did not start from ${CHROMIUM} (web/run-tests.sh installs chromium): ${error.message}`);
  }
}
