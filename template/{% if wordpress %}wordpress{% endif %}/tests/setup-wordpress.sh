#!/usr/bin/env bash
# For the end-to-end tests (tests/test_wordpress.py): no web server, no Composer, offline once the
# packages are there.
# A real WordPress (Debian's `wordpress` package files, no web server) for PHP CLI, on the local MariaDB.
# usage: setup-wordpress.sh DIR MU_PLUGINS_SRC   -> prints the WordPress root; DIR/db holds the database name.
# Remove with: mysql -uroot -h127.0.0.1 -e "DROP DATABASE $(cat DIR/db)"; rm -rf DIR
set -euo pipefail
D=$1; MU=$2
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" = 0 ] && { ! command -v php >/dev/null || ! php -m | grep -qi mysqli; }; then
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -q --no-install-recommends php-cli php-mysql php-curl >/dev/null
fi
mkdir -p "$D"
WP="$D/deb/usr/share/wordpress"
if [ ! -f "$WP/wp-settings.php" ]; then
  (cd "$D" && apt-get download -q wordpress >/dev/null 2>&1 && dpkg-deb -x wordpress_*.deb deb)
fi
DB=wp_bar_$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
echo "$DB" > "$D/db"
mysql -uroot -h127.0.0.1 -P3306 -e "CREATE DATABASE $DB CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
cat > "$WP/wp-config.php" <<EOF
<?php
define('DB_NAME','$DB'); define('DB_USER','root'); define('DB_PASSWORD',''); define('DB_HOST','127.0.0.1:3306');
define('DB_CHARSET','utf8mb4'); define('DB_COLLATE',''); \$table_prefix = 'wp_';
define('WP_HOME','http://127.0.0.1:9'); define('WP_SITEURL','http://127.0.0.1:9');
define('WP_CONTENT_DIR', __DIR__.'/wp-content'); define('DISABLE_WP_CRON', true); define('WP_HTTP_BLOCK_EXTERNAL', true);
define('WP_ACCESSIBLE_HOSTS', '127.0.0.1,localhost');
foreach (['AUTH_KEY','SECURE_AUTH_KEY','LOGGED_IN_KEY','NONCE_KEY','AUTH_SALT','SECURE_AUTH_SALT','LOGGED_IN_SALT','NONCE_SALT'] as \$k) define(\$k, 'test-only');
if (!defined('ABSPATH')) define('ABSPATH', __DIR__.'/');
require_once ABSPATH.'wp-settings.php';
EOF
rm -rf "$WP/wp-content/mu-plugins"; mkdir -p "$WP/wp-content/mu-plugins"
cp -r "$MU"/. "$WP/wp-content/mu-plugins/"
# WordPress exits 0 even when it cannot reach its database: check the printed marker.
php -r 'function wp_new_blog_notification() {}
  define("WP_INSTALLING", true); require $argv[1]."/wp-load.php"; require ABSPATH."wp-admin/includes/upgrade.php";
  wp_install("Bar", "admin", "admin@example.com", true, "", "admin-pw"); echo is_blog_installed() ? "INSTALLED\n" : "NOT-INSTALLED\n";' "$WP" 2>/dev/null | grep -qx INSTALLED
echo "$WP"
