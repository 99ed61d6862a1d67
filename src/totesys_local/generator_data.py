"""Fixed vocabularies of the totesys data generator (the shape of the real database's values).

The real totesys holds Faker-style values; these lists give the generator the same look:
addresses with 29 distinct countries among 30 rows, 20 counterparties, 8 departments in
Manchester/Leeds (one misspelt 'Leds', as in the real data), 12 design names, 20 staff.
"""

CURRENCY_CODES = ("GBP", "USD", "EUR")

# (department_name, location, manager); the real data misspells one location as 'Leds'.
DEPARTMENTS = (
    ("Sales", "Manchester", "Richard Roma"),
    ("Purchasing", "Manchester", "Naomi Lapaglia"),
    ("Production", "Leeds", "Chester Ratke"),
    ("Dispatch", "Leds", "Mark Hanna"),
    ("Finance", "Manchester", "Jordan Belfort"),
    ("Facilities", "Manchester", "Shelley Levene"),
    ("Communications", "Leeds", "Ann Blake"),
    ("HR", "Leeds", "James Link"),
)

PAYMENT_TYPES = ("SALES_RECEIPT", "SALES_REFUND", "PURCHASE_PAYMENT", "PURCHASE_REFUND")
SALES_RECEIPT_ID = 1
PURCHASE_PAYMENT_ID = 3

# (first_name, last_name, department_id)
STAFF = (
    ("Jeremie", "Franey", 2), ("Deron", "Beier", 6), ("Jeanette", "Erdman", 6),
    ("Ana", "Glover", 3), ("Magdalena", "Zieme", 8), ("Korey", "Kreiger", 3),
    ("Raphael", "Rippin", 2), ("Oswaldo", "Bergstrom", 7), ("Brody", "Ratke", 2),
    ("Jazmyn", "Kuhn", 2), ("Meda", "Cremin", 5), ("Imani", "Walker", 5),
    ("Stan", "Lehner", 4), ("Rigoberto", "VonRueden", 7), ("Tom", "Gutkowski", 3),
    ("Jett", "Parisian", 6), ("Irving", "Lemke", 3), ("Tomasa", "Moore", 8),
    ("Pierre", "Sauer", 2), ("Flavio", "Kulas", 3),
)

# New surnames for the simulator's "staff member changed name" event.
OTHER_LAST_NAMES = ("Hammes", "Schinner", "Boyle", "Dietrich", "Langosh", "Mraz", "Torp", "Wuckert")

COUNTERPARTY_NAMES = (
    "Fahey and Sons", "Leannon, Predovic and Morar", "Armstrong Inc", "Kohler Inc",
    "Frami, Yundt and Macejkovic", "Mraz LLC", "Padberg, Lueilwitz and Johnson",
    "Grant - Lakin", "Price LLC", "Bosco - Grant", "Hettinger LLC", "Moen LLC",
    "Rath, Purdy and Quitzon", "Kuvalis - Mertz", "Renner Group", "Yost, Watsica and Mann",
    "Ruecker, Ruecker and Morar", "Parisian Group", "Lubowitz LLC", "Jacobs - Crona",
)

CONTACT_FIRST = ("Micheal", "Melba", "Jean", "Myra", "Eva", "Ms. Wilma", "Lewis", "Florence",
                 "Dr. Ross", "Sheryl", "Alan", "Rosie", "Ana", "Emily", "Joel", "Jonathan")
CONTACT_LAST = ("Toy", "Sanford", "Hane", "Kuhlman", "Rosenbaum", "Hessel", "Zboncak",
                "Casper", "Heaney", "Langworth", "Sipes", "Bogisich", "Crist", "Orn")

COUNTRIES = (
    "Turkey", "Austria", "Antigua and Barbuda", "Guatemala", "Sierra Leone", "Falkland Islands",
    "San Marino", "Portugal", "Cayman Islands", "Bosnia and Herzegovina", "Iceland", "Tunisia",
    "Costa Rica", "Togo", "Chad", "Pitcairn Islands", "Lithuania", "Cuba", "Faroe Islands",
    "United Kingdom", "Uzbekistan", "Martinique", "Haiti", "Nicaragua", "Mexico",
    "Saint Kitts and Nevis", "Swaziland", "Belgium", "Guyana",
)

STREET_NAMES = ("Herzog", "Cartwright", "Rowe", "Dibbert", "Raynor", "Swaniawski", "Lind",
                "Jacobi", "Zieme", "Keeling", "Murazik", "Kiehn", "Runolfsson", "Schmidt")
STREET_SUFFIXES = ("Via", "Crossing", "Walks", "Lodge", "Lane", "Mills", "Ramp", "Groves",
                   "Causeway", "Parkways", "Land", "Ridge")
LINE_2_WORDS = ("Alexie Cliffs", "Ullrich Loop", "Emmanuel Crossroad", "Felipe Street",
                "Gleichner Port", "Carley Way", "Ondricka Ferry", "Kiana Wells")
DISTRICTS = ("Avon", "Buckinghamshire", "Bedfordshire", "Cambridgeshire", "Cheshire",
             "Cornwall", "Derbyshire", "Northumberland", "Surrey", "Somerset")
CITIES = ("New Patienceburgh", "Aliso Viejo", "Lake Charles", "Olsonside", "Fort Shadburgh",
          "Kendraburgh", "Suffolk", "Shanahanview", "Hackensack", "Pricetown", "East Bobbie",
          "Utica", "Ruthieberg", "Derby", "Bednarstad", "South Wyatt", "Port Hettie",
          "Lake Arne", "Sayreville", "Edinburgh")

DESIGN_NAMES = ("Wooden", "Bronze", "Granite", "Soft", "Steel", "Fresh", "Cotton",
                "Concrete", "Rubber", "Plastic", "Frozen", "Metal")
DESIGN_LOCATIONS = ("/usr/share", "/private", "/System", "/opt/include", "/usr/local/src",
                    "/Users", "/usr/ports", "/Network", "/var/mail", "/lost+found", "/home/user/dir",
                    "/etc/namedb", "/usr/X11R6", "/srv", "/media", "/root")

PRISMA_MIGRATION = {
    "id": "28f8ba11-8e5c-4dfa-b2f0-6b1c6f0e1e11",
    "checksum": "3e2b0b8a6c1a43f5b2e6f4de6c8f2b1f0b7f4a3e9d2c1b0a9f8e7d6c5b4a3f21",
    "migration_name": "20221103142037_init",
}
