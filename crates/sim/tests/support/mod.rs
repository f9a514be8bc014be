pub mod kv_history;
