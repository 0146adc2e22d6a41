"""The Kaleyra profile reconciler: config-as-code for WhatsApp Business phone-number profiles."""
